//! Fan-out benchmark: the real `camcast` binary serving its test pattern over loopback to N
//! real viewers, each on its own TCP connection, measured from outside the server; then how
//! fresh the frames of a reader slower than the camera are.
//!
//!     cargo bench --bench fanout              # full tables (about 8 minutes)
//!     cargo bench --bench fanout -- --quick   # CI's smoke run: fewer configs, short windows
//!     cargo bench --bench fanout -- --only http   # one transport (http or grpc), both tables
//!
//! Fan-out, per transport (gRPC `camcast.v1` streams through camcast's client; HTTP
//! `/stream.mjpg` through a plain reader, see tests/common/mjpeg_reader.rs), size and number
//! of viewers: delivered frames/s (all viewers), server CPU-seconds per delivered frame
//! (utime+stime from /proc/PID/stat over the window), capture→read latency p50/p99 from each
//! frame's capture time, and the server's peak RSS (VmHWM). The viewers run in this process
//! and share the machine's cores with the server: on a small machine the client side's own
//! CPU use caps what can be delivered, which the table shows honestly.
//!
//! Freshness: one reader that reads a frame, then sleeps until its next tick (10 or 2 a
//! second), against a 30 fps camera. Age = time of read − capture time. Reported: the worst
//! and mean age over the last part of the run, frames read per second, and for the pause case
//! (reads, looks away, reads on) the age of the first frame read after the pause.
//!
//! Every table is captioned with its date, the commit and the machine. Either run fails (exit
//! status ≠ 0) if a viewer errs, panics or hangs, or a viewer gets no frame.
//!
//! Environment: CAMCAST_BIN runs another server binary (e.g. one built from an older commit,
//! for before/after figures) instead of the one cargo built; the caption then names it.

#[path = "common/machine.rs"]
mod machine;
// The tests' plain MJPEG reader; the benchmark reads fewer of its fields.
#[allow(dead_code)]
#[path = "../tests/common/mjpeg_reader.rs"]
mod mjpeg_reader;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use camcast::client::{self, FrameStream};
use camcast::source::encode::{Encoder, Layout, YuvFormat};
use camcast::source::pattern::Canvas;
use mjpeg_reader::PlainReader;
use tokio::task::JoinHandle;

const FPS: f64 = 30.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Grpc,
    Http,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Grpc => "gRPC v1",
            Transport::Http => "HTTP MJPEG",
        }
    }

    /// Its name for `--only`.
    fn short(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

struct Plan {
    sizes: Vec<(u32, u32)>,
    viewers: Vec<usize>,
    warmup: Duration,
    window: Duration,
    freshness: Vec<Freshness>,
}

/// One freshness run: a reader at `reader_fps` for `run`; worst/mean age over its last `tail`.
#[derive(Debug, Clone, Copy)]
struct Freshness {
    size: (u32, u32),
    reader_fps: f64,
    run: Duration,
    tail: Duration,
    /// Look away after this long, for this long.
    pause: Option<(Duration, Duration)>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let plan = if quick { quick_plan() } else { full_plan() };
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    let transports: Vec<Transport> = [Transport::Grpc, Transport::Http]
        .into_iter()
        .filter(|t| only.is_none_or(|o| t.short() == o))
        .collect();
    assert!(!transports.is_empty(), "--only takes http or grpc");
    let server = Server::new();
    let caption = caption(&server);
    println!(
        "camcast fan-out benchmark{}",
        if quick { " (quick)" } else { "" }
    );
    println!("{caption}\n");

    println!("source cost alone (render + encode, one core); {caption}");
    for &(w, h) in &plan.sizes {
        let (ms, kib) = source_cost(w, h);
        println!("  {w}x{h}: {ms:.2} ms/frame, {kib:.1} KiB/frame");
    }

    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    for &transport in &transports {
        println!(
            "\nFan-out over {}, {FPS} fps test pattern; {caption}\n",
            transport.name()
        );
        println!(
            "| size | viewers | delivered fps (total) | per viewer | server CPU ms / delivered frame | latency p50 ms | latency p99 ms | server peak RSS MiB |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &(w, h) in &plan.sizes {
            for &n in &plan.viewers {
                let r = rt.block_on(fan_out(&server, transport, w, h, n, &plan));
                println!(
                    "| {w}x{h} | {n} | {:.0} | {:.1} | {:.3} | {:.1} | {:.1} | {:.1} |",
                    r.delivered_fps,
                    r.delivered_fps / n as f64,
                    r.cpu_ms_per_frame,
                    r.p50_ms,
                    r.p99_ms,
                    r.peak_rss_mib
                );
            }
        }
    }

    println!(
        "\nFreshness: one reader slower than the {FPS} fps camera (age = read time − capture time); {caption}\n"
    );
    println!("| transport | size | reader | run s | worst age ms (last part) | mean age ms | frames read/s | first read after the pause, age ms |");
    println!("|---|---|---|---|---|---|---|---|");
    for f in &plan.freshness {
        for &transport in &transports {
            let r = rt.block_on(freshness(&server, transport, f));
            let (w, h) = f.size;
            let reader = match f.pause {
                None => format!("{} fps", f.reader_fps),
                Some((at, len)) => format!(
                    "{} fps, {} s pause at {} s",
                    f.reader_fps,
                    len.as_secs(),
                    at.as_secs()
                ),
            };
            let after_pause = r
                .first_after_pause_ms
                .map_or("–".into(), |ms| format!("{ms:.0}"));
            println!(
                "| {} | {w}x{h} | {reader} | {} (last {}) | {:.0} | {:.0} | {:.1} | {after_pause} |",
                transport.name(),
                f.run.as_secs(),
                f.tail.as_secs(),
                r.worst_ms,
                r.mean_ms,
                r.read_fps,
            );
        }
    }
}

fn quick_plan() -> Plan {
    let s = Duration::from_secs;
    Plan {
        sizes: vec![(640, 480)],
        viewers: vec![1, 10],
        warmup: Duration::from_millis(500),
        window: s(2),
        freshness: vec![
            Freshness {
                size: (640, 480),
                reader_fps: 10.0,
                run: s(6),
                tail: s(3),
                pause: None,
            },
            Freshness {
                size: (640, 480),
                reader_fps: 10.0,
                run: s(6),
                tail: s(2),
                pause: Some((s(1), s(3))),
            },
        ],
    }
}

fn full_plan() -> Plan {
    let s = Duration::from_secs;
    let at_10fps = |size| Freshness {
        size,
        reader_fps: 10.0,
        run: s(30),
        tail: s(10),
        pause: None,
    };
    Plan {
        sizes: vec![(640, 480), (1920, 1080)],
        viewers: vec![1, 10, 50, 100],
        warmup: s(2),
        window: s(6),
        freshness: vec![
            at_10fps((640, 480)),
            at_10fps((1920, 1080)),
            Freshness {
                reader_fps: 2.0,
                ..at_10fps((640, 480))
            },
            Freshness {
                pause: Some((s(5), s(10))),
                ..at_10fps((640, 480))
            },
        ],
    }
}

/// The server binary under test.
struct Server {
    path: String,
    /// Built from this source tree (not a CAMCAST_BIN override).
    ours: bool,
    /// It has the per-address viewer cap (binaries before it reject the flag).
    viewer_cap_flag: bool,
}

impl Server {
    fn new() -> Server {
        let (path, ours) = match std::env::var("CAMCAST_BIN") {
            Ok(p) if !p.is_empty() => (p, false),
            _ => (env!("CARGO_BIN_EXE_camcast").to_string(), true),
        };
        let help = Command::new(&path)
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {path}: {e}"));
        let viewer_cap_flag =
            String::from_utf8_lossy(&help.stdout).contains("--max-viewers-per-addr");
        Server {
            path,
            ours,
            viewer_cap_flag,
        }
    }

    /// Starts it on free loopback ports with room for `viewers` from 127.0.0.1; returns the
    /// process, the gRPC and the HTTP address.
    fn spawn(&self, width: u32, height: u32, viewers: usize) -> (Child, String, String) {
        let (grpc, http) = (free_addr(), free_addr());
        let room = (viewers + 8).to_string();
        let mut cmd = Command::new(&self.path);
        // Old flag spellings (still accepted): CAMCAST_BIN may be a binary from before the
        // flags were renamed, for before/after figures.
        cmd.args(["--listen", &grpc, "--http", &http])
            .args(["--source", "test-pattern", "--led", "none", "--log", "warn"])
            // No mDNS: servers started one after another would rename each other on the LAN.
            .arg("--no-mdns")
            .args([
                "--size",
                &format!("{width}x{height}"),
                "--fps",
                &FPS.to_string(),
            ])
            .args(["--max-viewers", &room])
            // Every viewer comes from 127.0.0.1: lift the per-address caps with the viewer cap.
            .args(["--max-conns-per-addr", &room])
            .stderr(Stdio::inherit());
        if self.viewer_cap_flag {
            cmd.args(["--max-viewers-per-addr", &room]);
        }
        let child = cmd.spawn().expect("spawn camcast (built by cargo bench)");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(&http).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (child, grpc, http)
    }
}

fn free_addr() -> String {
    // Reserve a free port, release it, hand it to the server.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

/// "date, commit, machine" for every table.
fn caption(server: &Server) -> String {
    let date = humantime::format_rfc3339_seconds(SystemTime::now());
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let mut commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    if git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()) {
        commit.push_str("+changes");
    }
    let cpu = machine::cpu_model(&machine::cpuinfo());
    let cores = machine::cores();
    let binary = if server.ours {
        String::new()
    } else {
        format!("; server binary {} (CAMCAST_BIN)", server.path)
    };
    format!("{date}, commit {commit}, {cpu}, {cores} cores (server and viewers share them){binary}")
}

/// One viewer's read loop: reads until `done`, recording capture→read latency (µs) while
/// `recording`. Ends with an error if the stream fails or ends before `done`.
async fn viewer(
    mut stream: Stream,
    recording: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
) -> Result<Vec<u64>, String> {
    let mut latencies = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let captured = stream.next().await?;
        if recording.load(Ordering::Relaxed) {
            let age = SystemTime::now()
                .duration_since(captured)
                .unwrap_or_default();
            latencies.push(age.as_micros() as u64);
        }
    }
    Ok(latencies)
}

struct Row {
    delivered_fps: f64,
    cpu_ms_per_frame: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_mib: f64,
}

async fn fan_out(
    server: &Server,
    transport: Transport,
    width: u32,
    height: u32,
    viewers: usize,
    plan: &Plan,
) -> Row {
    let (mut child, grpc, http) = server.spawn(width, height, viewers);
    let recording = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks: Vec<JoinHandle<Result<Vec<u64>, String>>> = Vec::new();
    for i in 0..viewers {
        let stream = Stream::open(transport, &grpc, &http, &format!("bench-{i}")).await;
        tasks.push(tokio::spawn(viewer(
            stream,
            recording.clone(),
            done.clone(),
        )));
    }
    tokio::time::sleep(plan.warmup).await;
    let cpu0 = cpu_seconds(child.id());
    let t0 = Instant::now();
    recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(plan.window).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(child.id()) - cpu0;
    let peak_rss_mib = peak_rss_kib(child.id()) as f64 / 1024.0;
    done.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let result = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .unwrap_or_else(|_| panic!("viewer {i} hung"))
            .unwrap_or_else(|e| panic!("viewer {i} panicked: {e}"));
        let mine = result.unwrap_or_else(|e| panic!("viewer {i} failed: {e}"));
        assert!(
            !mine.is_empty(),
            "viewer {i} of {viewers} ({}, {width}x{height}) got no frame in the window",
            transport.name()
        );
        lat.extend(mine);
    }
    stop(&mut child);
    let frames = lat.len();
    lat.sort_unstable();
    let pct = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    Row {
        delivered_fps: frames as f64 / elapsed,
        cpu_ms_per_frame: cpu * 1000.0 / frames as f64,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        peak_rss_mib,
    }
}

struct FreshRow {
    worst_ms: f64,
    mean_ms: f64,
    read_fps: f64,
    first_after_pause_ms: Option<f64>,
}

/// A gRPC or HTTP stream, read one frame at a time.
enum Stream {
    Grpc(FrameStream),
    Http(PlainReader<tokio::net::TcpStream>),
}

impl Stream {
    async fn open(transport: Transport, grpc: &str, http: &str, name: &str) -> Stream {
        match transport {
            Transport::Grpc => {
                let channel = client::connect(grpc, Duration::from_secs(10))
                    .await
                    .expect("connect to server");
                Stream::Grpc(
                    FrameStream::open(channel, false, name, 0.0)
                        .await
                        .expect("open stream"),
                )
            }
            Transport::Http => {
                let tcp = tokio::net::TcpStream::connect(http).await.expect("connect");
                Stream::Http(
                    PlainReader::open(tcp, &format!("/stream.mjpg?name={name}"))
                        .await
                        .expect("open stream"),
                )
            }
        }
    }

    /// The next frame's capture time; an error if the stream fails or ends.
    async fn next(&mut self) -> Result<SystemTime, String> {
        let captured = match self {
            Stream::Grpc(s) => s
                .next()
                .await
                .map_err(|e| e.to_string())?
                .map(|f| f.captured_at.expect("v1 frames carry their capture time")),
            Stream::Http(r) => r
                .next_part()
                .await
                .map_err(|e| e.to_string())?
                .map(|p| p.captured_at),
        };
        captured.ok_or_else(|| "the stream ended early".into())
    }
}

async fn freshness(server: &Server, transport: Transport, f: &Freshness) -> FreshRow {
    let (w, h) = f.size;
    let (mut child, grpc, http) = server.spawn(w, h, 1);
    let mut stream = Stream::open(transport, &grpc, &http, "slow-reader").await;
    let period = Duration::from_secs_f64(1.0 / f.reader_fps);
    let t0 = Instant::now();
    let mut next_read = t0;
    let mut paused = f.pause.is_none();
    let mut first_after_pause = None;
    let mut reads: Vec<(Duration, Duration)> = Vec::new(); // (since start, age)
    while t0.elapsed() < f.run {
        if let Some((at, len)) = f.pause.filter(|_| !paused) {
            if t0.elapsed() >= at {
                tokio::time::sleep(len).await;
                paused = true;
                first_after_pause = Some(reads.len());
                next_read = Instant::now();
            }
        }
        tokio::time::sleep_until(next_read.into()).await;
        let captured = stream.next().await.unwrap_or_else(|e| panic!("{e}"));
        let age = SystemTime::now()
            .duration_since(captured)
            .unwrap_or_default();
        reads.push((t0.elapsed(), age));
        // Behind schedule, the next read comes at once, not in a burst.
        next_read = (next_read + period).max(Instant::now());
    }
    drop(stream);
    stop(&mut child);
    assert!(
        reads.len() >= 2,
        "{}: the reader got no frames",
        transport.name()
    );
    let end = reads.last().unwrap().0;
    let tail: Vec<f64> = reads
        .iter()
        .filter(|(t, _)| *t + f.tail >= end)
        .map(|(_, age)| age.as_secs_f64() * 1000.0)
        .collect();
    let span = (end - reads[0].0).as_secs_f64();
    let paused_for = f.pause.map_or(0.0, |(_, len)| len.as_secs_f64());
    FreshRow {
        worst_ms: tail.iter().copied().fold(0.0, f64::max),
        mean_ms: tail.iter().sum::<f64>() / tail.len() as f64,
        read_fps: (reads.len() - 1) as f64 / (span - paused_for),
        first_after_pause_ms: first_after_pause
            .and_then(|i| reads.get(i))
            .map(|(_, age)| age.as_secs_f64() * 1000.0),
    }
}

fn stop(server: &mut Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Peak resident set size (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Average render + encode time and JPEG size of the test pattern (the work a raw camera's
/// frames also need), measured directly rather than through the paced source.
fn source_cost(width: u32, height: u32) -> (f64, f64) {
    let mut canvas = Canvas::new(width as usize, height as usize);
    let layout = Layout::new(YuvFormat::I420, width, height, 0).expect("even size");
    let mut jpeg = Encoder::new(layout, 80).expect("encoder");
    let n = 100;
    let (mut bytes, t0) = (0usize, Instant::now());
    for i in 0..n {
        canvas.draw(i);
        bytes += jpeg.encode_planes(&canvas.planes()).expect("encode").len();
    }
    let ms = t0.elapsed().as_secs_f64() * 1000.0 / n as f64;
    (ms, bytes as f64 / n as f64 / 1024.0)
}
