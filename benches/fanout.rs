//! Fan-out benchmark: the real `camcast` binary serving its test pattern over loopback to N
//! real gRPC viewers (each on its own TCP connection), measured from outside the server.
//!
//!     cargo bench --bench fanout              # full table (about 2 minutes)
//!     cargo bench --bench fanout -- --quick   # a smoke run: fewer configs, shorter windows
//!
//! Per configuration it reports delivered frames/s (all viewers), server CPU-seconds per
//! delivered frame (utime+stime from /proc/PID/stat over the window), capture→receive latency
//! p50/p99 from each frame's capture timestamp, and the server's peak RSS (VmHWM). The viewers
//! run in this process and share the machine's cores with the server: on a small machine the
//! client side's own CPU use caps what can be delivered, which the table shows honestly.
//! It also measures the source's cost alone (render + libjpeg-turbo encode per frame).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use camcast::client::{self, FrameStream};
use camcast::source::encode::{Encoder, Layout, YuvFormat};
use camcast::source::pattern::Canvas;

#[path = "common/machine.rs"]
mod machine;

const FPS: f64 = 30.0;

struct Plan {
    sizes: Vec<(u32, u32)>,
    viewers: Vec<usize>,
    warmup: Duration,
    window: Duration,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = if quick {
        Plan {
            sizes: vec![(640, 480)],
            viewers: vec![1, 10],
            warmup: Duration::from_millis(500),
            window: Duration::from_secs(2),
        }
    } else {
        Plan {
            sizes: vec![(640, 480), (1920, 1080)],
            viewers: vec![1, 10, 50, 100],
            warmup: Duration::from_secs(2),
            window: Duration::from_secs(6),
        }
    };
    print_machine();
    println!("\nsource cost alone (render + encode, one core):");
    for &(w, h) in &plan.sizes {
        let (ms, kib) = source_cost(w, h);
        println!("  {w}x{h}: {ms:.2} ms/frame, {kib:.1} KiB/frame");
    }
    println!(
        "\n| size | viewers | delivered fps (total) | per viewer | server CPU ms / delivered frame | latency p50 ms | latency p99 ms | server peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    for &(w, h) in &plan.sizes {
        for &n in &plan.viewers {
            let r = rt.block_on(run_config(w, h, n, &plan));
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

struct Row {
    delivered_fps: f64,
    cpu_ms_per_frame: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_mib: f64,
}

async fn run_config(width: u32, height: u32, viewers: usize, plan: &Plan) -> Row {
    let (mut server, addr) = spawn_server(width, height, viewers);
    let recording = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut tasks = Vec::new();
    for i in 0..viewers {
        let channel = client::connect(&addr, Duration::from_secs(10))
            .await
            .expect("connect to server");
        let (recording, delivered, latencies) =
            (recording.clone(), delivered.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = FrameStream::open(channel, false, &format!("bench-{i}"), 0.0)
                .await
                .expect("open stream");
            let mut mine = Vec::new();
            while let Ok(Some(f)) = s.next().await {
                if recording.load(Ordering::Relaxed) {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    if let Some(l) = f.latency() {
                        mine.push(l.as_micros() as u64);
                    }
                }
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    tokio::time::sleep(plan.warmup).await;
    let cpu0 = cpu_seconds(server.id());
    let t0 = Instant::now();
    recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(plan.window).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server.id()) - cpu0;
    let frames = delivered.load(Ordering::Relaxed);
    let peak_rss_mib = peak_rss_kib(server.id()) as f64 / 1024.0;
    stop(&mut server);
    for t in tasks {
        let _ = t.await;
    }
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap());
    lat.sort_unstable();
    let pct = |q: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((lat.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
        }
    };
    Row {
        delivered_fps: frames as f64 / elapsed,
        cpu_ms_per_frame: cpu * 1000.0 / frames.max(1) as f64,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        peak_rss_mib,
    }
}

fn spawn_server(width: u32, height: u32, viewers: usize) -> (Child, String) {
    // Reserve a free port, release it, hand it to the server.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_camcast"))
        .args([
            "--listen",
            &addr,
            "--source",
            "test-pattern",
            "--led",
            "none",
            "--log",
            "warn",
        ])
        .args([
            "--size",
            &format!("{width}x{height}"),
            "--fps",
            &FPS.to_string(),
        ])
        .args(["--max-viewers", &(viewers + 8).to_string()])
        // Every viewer comes from 127.0.0.1: lift the per-address cap with the viewer cap.
        .args(["--max-connections-per-address", &(viewers + 8).to_string()])
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn camcast (built by cargo bench)");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
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

fn print_machine() {
    let cpu = machine::cpu_model(&machine::cpuinfo());
    let cores = machine::cores();
    println!(
        "machine: {cpu}, {cores} cores; server and viewers share them; {FPS} fps test pattern"
    );
}
