//! camcast vs µStreamer, like for like, on the same V4L2 devices in the same (emulated) guest.
//! Run it inside the test VM with `.ci/vm-bench`, which builds everything, passes both servers
//! in and boots the guest once.
//!
//! Three sides, each a server process with its own viewers:
//! - **µStreamer HTTP**: µStreamer's `GET /stream`;
//! - **camcast HTTP**: camcast's `GET /stream.mjpg` (the same transport: HTTP multipart MJPEG);
//! - **camcast gRPC**: camcast's `camcast.v1` through camcast's own client: PullFrames (the viewer
//!   asks for each frame, as camcast-view does) or, with `--grpc stream`, StreamFrames (the
//!   server pushes, paced by the client's HTTP/2 credits, as for stock gRPC clients).
//!
//! Both HTTP sides are read by the same reader (benches/vm_compare/http.rs: HTTP/1.1 like a
//! browser, one TCP connection per viewer, default socket buffers).
//!
//! Cases (by default the first and the last; `--case TEXT` picks any whose name contains TEXT):
//! - encode: vivid (/dev/video0) YUYV 640x480 at 25 fps (the fastest rate vivid's webcam input
//!   offers at that size), which both servers JPEG-encode;
//! - encode: vivid YUYV 1280x720 at 10 fps (its fastest there is 12.5 = 2/25 s, which
//!   µStreamer 4.9 rejects: "Invalid HW FPS numerator: 2 != 1");
//! - passthrough: MJPEG 1280x720 at 30 fps through v4l2loopback (/dev/video10, fed by a writer
//!   thread here), which both pass through.
//!
//! For each case, side and number of viewers (1, 10, 50), the server runs as a child process
//! with the same JPEG quality (80) and otherwise its defaults (µStreamer: CPU encoder, as many
//! workers as CPUs, plus `--tcp-nodelay`, which camcast always sets). After every viewer has a
//! frame and a warm-up, a window is measured:
//! - server CPU: utime + stime of the server process (/proc/PID/stat, all threads) over the
//!   window, per delivered frame (summed over all viewers), as % of one core, and split by
//!   thread name;
//! - fps per viewer (mean and slowest), the source's own rate, bytes and chroma sampling of the
//!   JPEGs, the server's peak RSS, this process's CPU (the viewers) and the guest's busy share.
//!
//! Then freshness: one reader per side that reads a frame, then sleeps until its next tick (10 a
//! second), for `--fresh-secs` (20); worst and mean frame age over the last `--fresh-tail` (5)
//! seconds. Age = the reader's clock when the part is read − the frame's V4L2 buffer timestamp
//! as the server reports it: camcast's `X-Timestamp` / the v1 `captured_at` (that timestamp
//! mapped to wall-clock time), µStreamer's `X-UStreamer-Grab-Time` (the same timestamp on
//! CLOCK_MONOTONIC, to the millisecond; sent with `?extra_headers=1`), against the same clock
//! read here. µStreamer's `X-Timestamp` is the time it wrote the part, not a capture time.
//!
//! Only ratios between the sides mean something: the guest is TCG-emulated, and its two vCPUs
//! are shared with the viewers and with vivid's in-kernel pattern generator.
//!
//! Environment: CAMCAST_BIN (default: the camcast binary cargo built), USTREAMER_BIN (default
//! `ustreamer`), USTREAMER_LIB (LD_LIBRARY_PATH for it), USTREAMER_ARGS (extra arguments),
//! VM_COMPARE_REQUIRE=1 (missing devices fail instead of skipping), VM_COMPARE_LOG_TAIL=N
//! (print the last N lines of each server's log after its run), VM_COMPARE_COMMIT and
//! VM_COMPARE_HOST (the commit and the host machine for the captions; .ci/vm-bench sets them,
//! the guest has no git).
//! Arguments: --quick (1 and 10 viewers, one short run each, short freshness runs),
//! --viewers 1,10,50, --window SECS (default 5), --warmup SECS (2), --repeat R (runs per side
//! and configuration, in A B C C B A order, default 2), --only ustreamer,http,grpc (sides),
//! --case TEXT, --fresh-secs S (20, 0 skips freshness), --fresh-tail S (5), --grpc pull|stream
//! (the gRPC side's method, default pull).

#[path = "vm_compare/feeder.rs"]
mod feeder;
#[path = "vm_compare/freshness.rs"]
mod freshness;
#[path = "vm_compare/http.rs"]
mod http;
#[path = "common/machine.rs"]
mod machine;
#[path = "vm_compare/pieces.rs"]
mod pieces;
#[path = "vm_compare/procfs.rs"]
mod procfs;
#[path = "vm_compare/report.rs"]
mod report;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use camcast::client::{self, FrameStream};
use camcast::pb;
use freshness::READER_FPS;

const VIVID: &str = "/dev/video0";
const LOOPBACK: &str = "/dev/video10";
const QUALITY: u8 = 80;

#[derive(Clone, Copy, PartialEq)]
enum PixFmt {
    Yuyv,
    Mjpeg,
}

struct Case {
    name: &'static str,
    device: &'static str,
    width: u32,
    height: u32,
    fps: f64,
    format: PixFmt,
    /// µStreamer's --desired-fps. For vivid it sets the device's rate, the same interval camcast
    /// asks for; since the device then reports exactly that rate, µStreamer's own software
    /// pacing stays off. For the loopback none: the writer sets the rate and the driver cannot,
    /// and µStreamer then paces in software at the desired rate, which with ordinary frame
    /// jitter drops every third frame of a 30 fps stream.
    ustreamer_fps: Option<u32>,
    /// Run without `--case`.
    default: bool,
}

const CASES: [Case; 3] = [
    Case {
        name: "encode: vivid YUYV 640x480 @25",
        device: VIVID,
        width: 640,
        height: 480,
        fps: 25.0,
        format: PixFmt::Yuyv,
        ustreamer_fps: Some(25),
        default: true,
    },
    Case {
        name: "encode: vivid YUYV 1280x720 @10",
        device: VIVID,
        width: 1280,
        height: 720,
        fps: 10.0,
        format: PixFmt::Yuyv,
        ustreamer_fps: Some(10),
        default: false,
    },
    Case {
        name: "passthrough: loopback MJPEG 1280x720 @30",
        device: LOOPBACK,
        width: 1280,
        height: 720,
        fps: 30.0,
        format: PixFmt::Mjpeg,
        ustreamer_fps: None,
        default: true,
    },
];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Side {
    Ustreamer,
    CamcastHttp,
    CamcastGrpc,
}

const SIDES: [Side; 3] = [Side::Ustreamer, Side::CamcastHttp, Side::CamcastGrpc];

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Ustreamer => "µStreamer HTTP",
            Side::CamcastHttp => "camcast HTTP",
            Side::CamcastGrpc => "camcast gRPC",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Side::Ustreamer => "ustreamer",
            Side::CamcastHttp => "http",
            Side::CamcastGrpc => "grpc",
        }
    }

    fn is_camcast(self) -> bool {
        self != Side::Ustreamer
    }
}

/// The camcast.v1 method the gRPC side's viewers read.
#[derive(Clone, Copy, PartialEq, Debug)]
enum GrpcMethod {
    /// PullFrames: one request per frame (camcast-view's way).
    Pull,
    /// StreamFrames: frames pushed as HTTP/2 credit allows (stock clients' way).
    Stream,
}

impl GrpcMethod {
    fn name(self) -> &'static str {
        match self {
            GrpcMethod::Pull => "PullFrames",
            GrpcMethod::Stream => "StreamFrames",
        }
    }

    /// Opens one viewer's stream of the default camera.
    async fn open(self, addr: SocketAddr, viewer: &str) -> anyhow::Result<FrameStream> {
        let channel = client::connect(&addr.to_string(), Duration::from_secs(30)).await?;
        Ok(match self {
            GrpcMethod::Pull => FrameStream::pull(channel, viewer, 0.0).await?,
            GrpcMethod::Stream => FrameStream::stream(channel, viewer, 0.0).await?,
        })
    }
}

struct Opts {
    viewers: Vec<usize>,
    warmup: Duration,
    window: Duration,
    /// Runs per side and configuration, in A B C C B A order.
    repeat: usize,
    sides: Vec<Side>,
    grpc: GrpcMethod,
    /// Only the cases whose name contains this (case-insensitive); default cases without it.
    case_filter: Option<String>,
    /// The freshness reader's run (zero: no freshness runs) and the part its ages are taken from.
    fresh_run: Duration,
    fresh_tail: Duration,
    /// Print this many last lines of each server's log after its run (debugging).
    log_tail: usize,
    camcast: PathBuf,
    ustreamer: PathBuf,
    ustreamer_lib: Option<String>,
    ustreamer_args: Vec<String>,
}

impl Opts {
    fn from_env() -> Opts {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let quick = args.iter().any(|a| a == "--quick");
        let secs = |flag: &str, default: f64| {
            Duration::from_secs_f64(value(flag).and_then(|v| v.parse().ok()).unwrap_or(default))
        };
        let viewers = value("--viewers")
            .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| if quick { vec![1, 10] } else { vec![1, 10, 50] });
        let sides = match value("--only") {
            Some(list) => SIDES
                .into_iter()
                .filter(|s| list.split(',').any(|w| w.trim() == s.short()))
                .collect(),
            None => SIDES.to_vec(),
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Opts {
            viewers,
            warmup: secs("--warmup", if quick { 1.0 } else { 2.0 }),
            window: secs("--window", if quick { 2.0 } else { 5.0 }),
            repeat: value("--repeat")
                .and_then(|v| v.parse().ok())
                .unwrap_or(if quick { 1 } else { 2 })
                .max(1),
            sides,
            grpc: match value("--grpc").as_deref() {
                None | Some("pull") => GrpcMethod::Pull,
                Some("stream") => GrpcMethod::Stream,
                Some(other) => {
                    eprintln!("vm_compare: --grpc {other:?}: expected pull or stream");
                    std::process::exit(2);
                }
            },
            case_filter: value("--case").map(|c| c.to_lowercase()),
            fresh_run: secs("--fresh-secs", if quick { 8.0 } else { 20.0 }),
            fresh_tail: secs("--fresh-tail", if quick { 3.0 } else { 5.0 }),
            log_tail: env("VM_COMPARE_LOG_TAIL")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            camcast: env("CAMCAST_BIN")
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_camcast").into())
                .into(),
            ustreamer: env("USTREAMER_BIN")
                .unwrap_or_else(|| "ustreamer".into())
                .into(),
            ustreamer_lib: env("USTREAMER_LIB"),
            ustreamer_args: env("USTREAMER_ARGS")
                .map(|a| a.split_whitespace().map(String::from).collect())
                .unwrap_or_default(),
        }
    }
}

fn main() {
    let opts = Opts::from_env();
    let missing: Vec<&str> = [VIVID, LOOPBACK]
        .into_iter()
        .filter(|d| !Path::new(d).exists())
        .collect();
    if !missing.is_empty() {
        let why = format!(
            "vm_compare: {} missing; this benchmark runs inside the test VM (.ci/vm-bench)",
            missing.join(", ")
        );
        if std::env::var_os("VM_COMPARE_REQUIRE").is_some() {
            eprintln!("{why}");
            std::process::exit(1);
        }
        println!("{why}: skipped");
        return;
    }
    if opts.sides.is_empty() {
        eprintln!("vm_compare: --only names no side (ustreamer, http, grpc)");
        std::process::exit(2);
    }
    http::self_check();
    let t_all = Instant::now();
    let caption = report::caption();
    report::print_setup(&opts, &caption);
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|c| match &opts.case_filter {
            Some(f) => c.name.to_lowercase().contains(f),
            None => c.default,
        })
        .collect();
    pieces::print(&cases);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut rows = Vec::new();
    let mut fresh = Vec::new();
    let mut runs = 0;
    for &case in &cases {
        let feeder = match case.format {
            PixFmt::Mjpeg => {
                match feeder::Feeder::start(case.device, case.width, case.height, case.fps) {
                    Ok(f) => {
                        println!(
                            "{}: writer thread feeds {} KiB JPEGs (4:2:0, q80, 30 distinct frames)",
                            case.name,
                            f.frame_bytes / 1024
                        );
                        Some(f)
                    }
                    Err(e) => {
                        println!("{}: cannot feed the loopback: {e:#}", case.name);
                        continue;
                    }
                }
            }
            PixFmt::Yuyv => None,
        };
        for &n in &opts.viewers {
            // A B C C B A ...: a drift in the host's load (the guest is emulated on a shared
            // machine) then weighs on every side alike.
            let mut results: Vec<(Side, anyhow::Result<Measured>)> = Vec::new();
            for r in 0..opts.repeat {
                let mut order = opts.sides.clone();
                if r % 2 == 1 {
                    order.reverse();
                }
                for side in order {
                    let t0 = Instant::now();
                    let result = rt.block_on(measure(case, side, n, &opts));
                    println!(
                        "  {} ({:.0} s)",
                        line(case, side, n, &result),
                        t0.elapsed().as_secs_f64()
                    );
                    results.push((side, result));
                    runs += 1;
                }
            }
            for &side in &opts.sides {
                let (mine, rest): (Vec<_>, Vec<_>) =
                    results.into_iter().partition(|(s, _)| *s == side);
                results = rest;
                rows.push(Row {
                    case: case.name,
                    side,
                    viewers: n,
                    result: Measured::combine(mine.into_iter().map(|(_, r)| r).collect()),
                });
            }
        }
        if !opts.fresh_run.is_zero() {
            for &side in &opts.sides {
                let t0 = Instant::now();
                let result = rt.block_on(freshness::run(case, side, &opts));
                match &result {
                    Ok(f) => println!(
                        "  {} | {} | {READER_FPS} fps reader: worst age {:.0} ms, mean {:.0} ms, {:.1} reads/s ({:.0} s)",
                        case.name,
                        side.name(),
                        f.worst_ms,
                        f.mean_ms,
                        f.read_fps,
                        t0.elapsed().as_secs_f64()
                    ),
                    Err(e) => println!(
                        "  {} | {} | {READER_FPS} fps reader: FAILED: {e:#}",
                        case.name,
                        side.name()
                    ),
                }
                fresh.push(freshness::FreshRow {
                    case: case.name,
                    side,
                    result,
                });
            }
        }
        drop(feeder);
    }
    report::print_tables(&rows, &fresh, &cases, &opts, &caption);
    println!(
        "\nvm_compare: {runs} runs and {} freshness runs in {:.0} s",
        fresh.len(),
        t_all.elapsed().as_secs_f64()
    );
    if rows.iter().any(|r| r.result.is_err()) || fresh.iter().any(|f| f.result.is_err()) {
        std::process::exit(1);
    }
}

/// One viewer's counters. Counting is monotonic; the window is the difference of two snapshots.
#[derive(Default)]
pub struct ViewerStats {
    frames: AtomicU64,
    bytes: AtomicU64,
    first: OnceLock<Option<JpegShape>>,
    error: Mutex<Option<String>>,
}

impl ViewerStats {
    pub fn record(&self, len: usize, jpeg: Option<&[u8]>) {
        if let Some(j) = jpeg {
            let _ = self.first.set(jpeg_shape(j));
        }
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        self.frames.fetch_add(1, Ordering::Relaxed);
    }

    pub fn fail(&self, why: String) {
        self.error.lock().unwrap().get_or_insert(why);
    }

    fn snapshot(&self) -> (u64, u64) {
        (
            self.frames.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

struct Row {
    case: &'static str,
    side: Side,
    viewers: usize,
    result: anyhow::Result<Measured>,
}

struct Measured {
    source_fps: f64,
    fps_mean: f64,
    fps_min: f64,
    cpu_ms_per_frame: f64,
    cpu_pct: f64,
    kib_per_frame: f64,
    shape: String,
    rss_mib: f64,
    viewers_cpu_pct: f64,
    guest_busy_pct: f64,
    /// CPU ms per delivered frame of each run (one entry until runs are combined).
    runs_cpu_ms: Vec<f64>,
    /// The server's CPU seconds over the window(s) by thread name.
    threads: Vec<(String, f64)>,
    note: String,
}

fn line(case: &Case, side: Side, n: usize, r: &anyhow::Result<Measured>) -> String {
    let head = format!("{} | {} | {n} viewers", case.name, side.name());
    match r {
        Ok(m) => format!(
            "{head}: {:.1} fps/viewer (slowest {:.1}), server {:.2} ms CPU/frame, {:.0}% CPU{}",
            m.fps_mean,
            m.fps_min,
            m.cpu_ms_per_frame,
            m.cpu_pct,
            if m.note.is_empty() {
                String::new()
            } else {
                format!(" [{}]", m.note)
            }
        ),
        Err(e) => format!("{head}: FAILED: {e:#}"),
    }
}

impl Measured {
    /// "capture 71%, tokio-rt-worker 29%": each thread name's share of the server's CPU.
    fn thread_shares(&self) -> String {
        let total: f64 = self.threads.iter().map(|t| t.1).sum();
        self.threads
            .iter()
            .filter(|t| total > 0.0 && t.1 / total >= 0.005)
            .map(|(name, s)| format!("{name} {:.0}%", s * 100.0 / total))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The runs of one configuration: means (the window is the same length each time), the
    /// slowest viewer of all, the highest peak RSS, and each run's CPU per frame for the spread.
    fn combine(runs: Vec<anyhow::Result<Measured>>) -> anyhow::Result<Measured> {
        let total = runs.len();
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        for r in runs {
            match r {
                Ok(m) => ok.push(m),
                Err(e) => errors.push(e),
            }
        }
        if ok.is_empty() {
            return Err(errors
                .into_iter()
                .next()
                .unwrap_or_else(|| anyhow::anyhow!("no runs")));
        }
        let k = ok.len() as f64;
        let mean = |f: fn(&Measured) -> f64| ok.iter().map(f).sum::<f64>() / k;
        let mut notes: Vec<String> = Vec::new();
        for m in &ok {
            if !m.note.is_empty() && !notes.contains(&m.note) {
                notes.push(m.note.clone());
            }
        }
        if !errors.is_empty() {
            notes.push(format!(
                "{} of {total} runs failed: {:#}",
                errors.len(),
                errors[0]
            ));
        }
        Ok(Measured {
            source_fps: mean(|m| m.source_fps),
            fps_mean: mean(|m| m.fps_mean),
            fps_min: ok.iter().map(|m| m.fps_min).fold(f64::INFINITY, f64::min),
            cpu_ms_per_frame: mean(|m| m.cpu_ms_per_frame),
            cpu_pct: mean(|m| m.cpu_pct),
            kib_per_frame: mean(|m| m.kib_per_frame),
            shape: ok[0].shape.clone(),
            rss_mib: ok.iter().map(|m| m.rss_mib).fold(0.0, f64::max),
            viewers_cpu_pct: mean(|m| m.viewers_cpu_pct),
            guest_busy_pct: mean(|m| m.guest_busy_pct),
            runs_cpu_ms: ok.iter().flat_map(|m| m.runs_cpu_ms.clone()).collect(),
            threads: {
                let mut all: Vec<(String, f64)> = Vec::new();
                for (name, s) in ok.iter().flat_map(|m| m.threads.iter()) {
                    match all.iter_mut().find(|a| &a.0 == name) {
                        Some(a) => a.1 += s,
                        None => all.push((name.clone(), *s)),
                    }
                }
                all.sort_by(|a, b| b.1.total_cmp(&a.1));
                all
            },
            note: notes.join("; "),
        })
    }
}

/// A server under test: the process and where it listens (µStreamer: HTTP only).
struct Running {
    child: ChildGuard,
    grpc: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
}

impl Running {
    async fn start(case: &Case, side: Side, viewers: usize, opts: &Opts) -> anyhow::Result<Self> {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (grpc, http) = (loopback(free_port()?), loopback(free_port()?));
        let log = PathBuf::from(format!(
            "/tmp/vm_compare-{}-{}x{}-{viewers}.log",
            side.short(),
            case.width,
            case.height
        ));
        let mut child = ChildGuard(spawn(side, case, grpc, http, viewers, opts, &log)?);
        let started = async {
            wait_listening(http, &mut child.0, Duration::from_secs(30)).await?;
            if side == Side::Ustreamer {
                http::wait_online(http, Duration::from_secs(30)).await?;
            }
            anyhow::Ok(())
        };
        match started.await {
            Ok(()) => Ok(Running {
                child,
                grpc,
                http,
                log,
            }),
            Err(e) => {
                drop(child);
                let tail = tail_lines(&log, 15).join("\n");
                Err(e.context(format!("server log {}:\n{tail}", log.display())))
            }
        }
    }

    fn pid(&self) -> String {
        self.child.0.id().to_string()
    }

    /// Stops the server; `r` gains the log's tail if it failed.
    fn finish<T>(mut self, r: anyhow::Result<T>, log_tail: usize) -> anyhow::Result<T> {
        self.child.stop();
        if log_tail > 0 {
            println!("    --- {} (last {log_tail} lines)", self.log.display());
            for l in tail_lines(&self.log, log_tail) {
                println!("    {l}");
            }
        }
        r.map_err(|e| {
            let tail = tail_lines(&self.log, 15).join("\n");
            e.context(format!("server log {}:\n{tail}", self.log.display()))
        })
    }
}

async fn measure(case: &Case, side: Side, n: usize, opts: &Opts) -> anyhow::Result<Measured> {
    let server = Running::start(case, side, n, opts).await?;
    let r = run_viewers(case, side, n, opts, &server).await;
    server.finish(r, opts.log_tail)
}

async fn run_viewers(
    case: &Case,
    side: Side,
    n: usize,
    opts: &Opts,
    server: &Running,
) -> anyhow::Result<Measured> {
    let pid = server.pid();
    let stats: Vec<Arc<ViewerStats>> = (0..n).map(|_| Arc::default()).collect();
    let tasks = Tasks(
        stats
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let st = st.clone();
                match side {
                    Side::CamcastGrpc => tokio::spawn(grpc_viewer(server.grpc, opts.grpc, i, st)),
                    Side::CamcastHttp => tokio::spawn(http::viewer(
                        server.http,
                        format!("/stream.mjpg?name=vm-compare-{i}"),
                        st,
                    )),
                    Side::Ustreamer => tokio::spawn(http::viewer(
                        server.http,
                        format!("/stream?key=vm-compare-{i}"),
                        st,
                    )),
                }
            })
            .collect(),
    );
    // Every viewer has its first frame, then the warm-up.
    let t0 = Instant::now();
    while stats.iter().any(|s| s.snapshot().0 == 0) {
        if let Some(e) = first_error(&stats) {
            bail!("a viewer failed before its first frame: {e}");
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let waiting = stats.iter().filter(|s| s.snapshot().0 == 0).count();
            bail!("{waiting} of {n} viewers got no frame within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(opts.warmup).await;

    let captured0 = captured(side, server).await;
    let before: Vec<(u64, u64)> = stats.iter().map(|s| s.snapshot()).collect();
    let (cpu0, self0, guest0, threads0) = (
        procfs::cpu_seconds(&pid),
        procfs::cpu_seconds("self"),
        procfs::guest_jiffies(),
        procfs::thread_cpu(&pid),
    );
    let w0 = Instant::now();
    tokio::time::sleep(opts.window).await;
    let (cpu1, self1, guest1, threads1) = (
        procfs::cpu_seconds(&pid),
        procfs::cpu_seconds("self"),
        procfs::guest_jiffies(),
        procfs::thread_cpu(&pid),
    );
    let after: Vec<(u64, u64)> = stats.iter().map(|s| s.snapshot()).collect();
    let elapsed = w0.elapsed().as_secs_f64();
    let captured1 = captured(side, server).await;
    let rss_mib = procfs::peak_rss_mib(&pid);
    drop(tasks);

    let per_viewer: Vec<(u64, u64)> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.0 - b.0, a.1 - b.1))
        .collect();
    let frames: u64 = per_viewer.iter().map(|v| v.0).sum();
    let bytes: u64 = per_viewer.iter().map(|v| v.1).sum();
    let fps_min = per_viewer.iter().map(|v| v.0).min().unwrap_or(0) as f64 / elapsed;
    let cpu = cpu1 - cpu0;
    let source_fps = match (side, &captured0, &captured1) {
        // µStreamer: its own captured_fps (the last whole second), read after the window.
        (Side::Ustreamer, _, Ok((fps, _))) => *fps,
        // camcast: frames captured over the window (GetInfo counters).
        (_, Ok((c0, _)), Ok((c1, _))) => (c1 - c0) / elapsed,
        _ => f64::NAN,
    };
    let mut note = captured1.map(|(_, n)| n).unwrap_or_default();
    let shape = stats[0]
        .first
        .get()
        .cloned()
        .flatten()
        .map_or_else(|| "?".to_string(), |s| s.to_string());
    if !shape.starts_with(&format!("{}x{} ", case.width, case.height)) {
        note.push_str(&format!(" size mismatch: {shape}"));
    }
    if let Some(e) = first_error(&stats) {
        note.push_str(&format!(" viewer error: {e}"));
    }
    let (busy, total) = (guest1.0 - guest0.0, guest1.1 - guest0.1);
    let cpu_ms_per_frame = cpu * 1000.0 / frames.max(1) as f64;
    Ok(Measured {
        source_fps,
        fps_mean: frames as f64 / n as f64 / elapsed,
        fps_min,
        cpu_ms_per_frame,
        cpu_pct: cpu * 100.0 / elapsed,
        kib_per_frame: bytes as f64 / frames.max(1) as f64 / 1024.0,
        shape,
        rss_mib,
        viewers_cpu_pct: (self1 - self0) * 100.0 / elapsed,
        guest_busy_pct: busy as f64 * 100.0 / total.max(1) as f64,
        runs_cpu_ms: vec![cpu_ms_per_frame],
        threads: procfs::thread_cpu_delta(&threads0, &threads1),
        note: note.trim().to_string(),
    })
}

fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

fn first_error(stats: &[Arc<ViewerStats>]) -> Option<String> {
    stats.iter().find_map(|s| s.error.lock().unwrap().clone())
}

/// Frames captured so far (camcast) or the current capture rate (µStreamer), with a note on
/// the server's own view of the mode.
async fn captured(side: Side, server: &Running) -> anyhow::Result<(f64, String)> {
    if side == Side::Ustreamer {
        let state = http::state(server.http).await?;
        let fps = http::json_value(&state, "captured_fps")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        let encoder = http::json_value(&state, "type").unwrap_or("?");
        let desired = http::json_value(&state, "desired_fps").unwrap_or("?");
        return Ok((fps, format!("encoder {encoder}, desired_fps {desired}")));
    }
    let channel = client::connect(&server.grpc.to_string(), Duration::from_secs(10)).await?;
    let info = client::camera_client(channel)
        .get_info(pb::v1::GetInfoRequest::default())
        .await?
        .into_inner();
    let captured = info.counters.map_or(0, |c| c.frames_captured);
    let mode = info
        .mode
        .map(|m| format!("{} {}x{}@{}", m.pixel_format, m.width, m.height, m.fps))
        .unwrap_or_default();
    Ok((captured as f64, mode))
}

async fn grpc_viewer(addr: SocketAddr, method: GrpcMethod, i: usize, stats: Arc<ViewerStats>) {
    let run = async {
        let mut stream = method.open(addr, &format!("vm-compare-{i}")).await?;
        let mut first = true;
        while let Some(f) = stream.next().await? {
            stats.record(f.jpeg.len(), first.then_some(&f.jpeg[..]));
            first = false;
        }
        bail!("camcast ended the stream")
    };
    let r: anyhow::Result<()> = run.await;
    if let Err(e) = r {
        stats.fail(format!("{e:#}"));
    }
}

/// Aborts the viewer tasks when dropped (their connections close with them).
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn spawn(
    side: Side,
    case: &Case,
    grpc: SocketAddr,
    http: SocketAddr,
    viewers: usize,
    opts: &Opts,
    log: &Path,
) -> anyhow::Result<Child> {
    let size = format!("{}x{}", case.width, case.height);
    let mut cmd = if side.is_camcast() {
        // Every viewer comes from 127.0.0.1: the per-address caps are lifted with the viewer cap.
        let room = (viewers + 8).to_string();
        let mut c = Command::new(&opts.camcast);
        c.args([
            "--listen",
            &grpc.to_string(),
            "--http-listen",
            &http.to_string(),
        ])
        .args(["--source", &format!("v4l2:{}", case.device)])
        .args(["--size", &size, "--fps", &case.fps.to_string()])
        .args([
            "--format",
            match case.format {
                PixFmt::Yuyv => "yuyv",
                PixFmt::Mjpeg => "mjpeg",
            },
        ])
        .args(["--quality", &QUALITY.to_string(), "--led", "none"])
        .args(["--no-mdns", "--log", "info"])
        .args(["--max-viewers", &room])
        .args(["--max-connections-per-address", &room])
        .args(["--max-viewers-per-address", &room]);
        c
    } else {
        let mut c = Command::new(&opts.ustreamer);
        c.args(["--device", case.device, "--resolution", &size])
            .args([
                "--format",
                match case.format {
                    PixFmt::Yuyv => "YUYV",
                    PixFmt::Mjpeg => "MJPEG",
                },
            ])
            .args(["--host", "127.0.0.1", "--port", &http.port().to_string()])
            .args(["--quality", &QUALITY.to_string(), "--encoder", "CPU"])
            .args(["--tcp-nodelay", "--exit-on-parent-death"])
            .args(&opts.ustreamer_args);
        if let Some(fps) = case.ustreamer_fps {
            c.args(["--desired-fps", &fps.to_string()]);
        }
        if let Some(lib) = &opts.ustreamer_lib {
            c.env("LD_LIBRARY_PATH", lib);
        }
        c
    };
    let log_file = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("start {}", cmd.get_program().to_string_lossy()))
}

/// Stops the server (SIGTERM, then SIGKILL after 10 s) however the run ends.
struct ChildGuard(Child);

impl ChildGuard {
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> anyhow::Result<u16> {
    // Reserve a free port, release it, hand it to the server.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_listening(
    addr: SocketAddr,
    child: &mut Child,
    limit: Duration,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the server exited at start-up ({status})");
        }
        if t0.elapsed() > limit {
            bail!("the server did not listen on {addr} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Size and chroma sampling of a JPEG, from its SOF segment.
#[derive(Clone)]
struct JpegShape {
    width: u16,
    height: u16,
    sampling: &'static str,
}

impl std::fmt::Display for JpegShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{} {}", self.width, self.height, self.sampling)
    }
}

fn jpeg_shape(j: &[u8]) -> Option<JpegShape> {
    if !j.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let be16 = |p: usize| Some(u16::from_be_bytes([*j.get(p)?, *j.get(p + 1)?]));
    let mut p = 2;
    while p + 4 <= j.len() {
        if j[p] != 0xFF {
            return None;
        }
        let marker = j[p + 1];
        if marker == 0xFF {
            p += 1;
            continue;
        }
        let len = usize::from(be16(p + 2)?);
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let (height, width) = (be16(p + 5)?, be16(p + 7)?);
            let components = *j.get(p + 9)?;
            let hv = *j.get(p + 11)?;
            let sampling = match (components, hv >> 4, hv & 0x0F) {
                (1, _, _) => "gray",
                (_, 2, 2) => "4:2:0",
                (_, 2, 1) => "4:2:2",
                (_, 1, 1) => "4:4:4",
                _ => "other",
            };
            return Some(JpegShape {
                width,
                height,
                sampling,
            });
        }
        if marker == 0xDA {
            return None;
        }
        p += 2 + len;
    }
    None
}
