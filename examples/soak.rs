//! Soak test: the real `camcast` binary on loopback, 100 viewers with churn, sampled every second.
//!
//!     cargo build --release --bin camcast
//!     cargo run --release --example soak -- [--duration 120s] [--viewers 100] [--seed N]
//!                                           [--chaos "error=0.01,stall=0.002,corrupt=0.02"]
//!
//! Viewers (each its own TCP connection, seeded random choices; `--seed` repeats a run):
//! - fast (4): read every frame for the whole run; their frame rate is checked.
//! - churners (the rest, minus the two groups below): connect (half seed API, half v1), read for
//!   0.5-8 s, then vanish: the TCP socket is shut down under the HTTP/2 stack, so the server
//!   gets no RST_STREAM or GOAWAY, only a dead connection. Then they reconnect.
//! - slow (15%): sleep 50-500 ms between reads, for 2-15 s, then vanish and reconnect.
//! - stalled (10%): a small HTTP/2 window, one frame read, then never polled for 3-20 s; vanish,
//!   reconnect.
//!
//! Every second it prints the server's RSS, open FDs and threads (/proc/PID/status, /proc/PID/fd),
//! the fast viewers' frame rates over that second and the churn so far. It fails (exit 1) if:
//! - RSS, FDs or threads grow without bound. Rule: the maximum over the last third of the run
//!   may exceed the maximum over the middle third by at most 5% plus a small slack (2 MiB,
//!   8 FDs, 2 threads). Usage that plateaus passes; a leak of any steady rate over the run
//!   adds a third of its total growth between those thirds and fails. The first third is
//!   warm-up (allocator arenas, buffers reaching their working size) and not compared.
//! - any fast viewer's mean rate after the first 5 s is below 90% of the source rate (without
//!   `--chaos`), or, with `--chaos`, any fast viewer's stream broke or it got no frame in the
//!   last 5 s of the run (it must recover from every injected fault);
//! - any viewer failed to open a stream or had one break (churners end theirs on purpose, by
//!   vanishing; the server never should);
//! - the server panicked: its log holds the panic hook's mark (or Rust's default "panicked
//!   at"), or GetInfo counts a panic; or the server died, or it does not exit 0 on SIGTERM;
//! - the server still counts viewers after every viewer has gone;
//! - the server's own counters disagree with what the viewers saw: it admitted fewer viewers
//!   than opened a stream, or more than tried to; or it says it sent a fast viewer more frames
//!   than that viewer ever received, or fewer than it had already received.

use std::net::Shutdown;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use camcast::client::FrameStream;
use hyper_util::rt::TokioIo;
use tonic::transport::Endpoint;

struct Args {
    duration: Duration,
    viewers: usize,
    fast: usize,
    seed: u64,
    chaos: Option<String>,
    fps: f64,
    server: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: soak [--duration 120s|2m] [--viewers 100] [--fast 4] [--seed N] [--chaos RATES] \
         [--fps 30] [--server PATH]"
    );
    std::process::exit(2)
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = match s.strip_suffix('m') {
        Some(n) => (n, 60.0),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    let secs: f64 = num.parse().ok()?;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs * unit))
}

fn parse_args() -> Args {
    let mut a = Args {
        duration: Duration::from_secs(120),
        viewers: 100,
        fast: 4,
        seed: fastrand::u64(..),
        chaos: None,
        fps: 30.0,
        server: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        let ok = match flag.as_str() {
            "--duration" => parse_duration(&value).map(|d| a.duration = d),
            "--viewers" => value.parse().ok().map(|n| a.viewers = n),
            "--fast" => value.parse().ok().map(|n| a.fast = n),
            "--seed" => value.parse().ok().map(|n| a.seed = n),
            "--fps" => value.parse().ok().map(|n| a.fps = n),
            "--chaos" => {
                a.chaos = Some(value.clone());
                Some(())
            }
            "--server" => {
                a.server = Some(value.clone().into());
                Some(())
            }
            _ => None,
        };
        if ok.is_none() {
            eprintln!("soak: bad flag or value: {flag} {value}");
            usage();
        }
    }
    if a.fast == 0 || a.viewers < a.fast + 10 || a.duration < Duration::from_secs(15) {
        eprintln!("soak: needs --fast ≥ 1, --viewers ≥ fast + 10 and --duration ≥ 15s");
        usage();
    }
    a
}

/// What the viewers have done so far.
#[derive(Default)]
struct Churn {
    /// Stream opens begun; `connects` + `open_errors` + those cut short at the end.
    opens_started: AtomicU64,
    connects: AtomicU64,
    vanishes: AtomicU64,
    open_errors: AtomicU64,
    stream_errors: AtomicU64,
}

/// One fast viewer's progress.
#[derive(Default)]
struct Fast {
    opened: AtomicBool,
    frames: AtomicU64,
    broken: AtomicBool,
    /// Frames the server says it sent this viewer; at the end it reads until it has them all.
    owed: AtomicU64,
}

/// The name a fast viewer gives the server, to find it in GetInfo's viewer list.
fn fast_name(i: usize) -> String {
    format!("fast-{i}")
}

#[derive(Clone, Copy)]
enum Role {
    Churner,
    Slow,
    Stalled,
}

fn main() -> ExitCode {
    let args = parse_args();
    let (mut server, addr, log) = spawn_server(&args);
    println!(
        "soak: seed {} | {} viewers ({} fast) | {:?} | server pid {} on {addr}{}",
        args.seed,
        args.viewers,
        args.fast,
        args.duration,
        server.id(),
        args.chaos
            .as_ref()
            .map_or(String::new(), |c| format!(" | chaos {c}"))
    );
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let churn = Arc::new(Churn::default());
    let fast: Vec<Arc<Fast>> = (0..args.fast).map(|_| Arc::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut rng = fastrand::Rng::with_seed(args.seed);
    for (i, f) in fast.iter().enumerate() {
        rt.spawn(fast_viewer(addr.clone(), i, f.clone(), stop.clone()));
    }
    for i in 0..args.viewers - args.fast {
        let role = match i % 20 {
            0 | 1 => Role::Stalled,
            2..=4 => Role::Slow,
            _ => Role::Churner,
        };
        let seed = rng.u64(..);
        rt.spawn(churn_viewer(
            addr.clone(),
            role,
            seed,
            churn.clone(),
            stop.clone(),
        ));
    }
    let samples = sample_until(&args, server.id(), &fast, &churn);
    // The server's view while the fast viewers still read: what it has sent each of them,
    // bracketed by what they had received before the call and will have received after it.
    let received_before: Vec<u64> = fast
        .iter()
        .map(|f| f.frames.load(Ordering::SeqCst))
        .collect();
    let during = rt.block_on(server_info(&addr));
    for (i, f) in fast.iter().enumerate() {
        let sent = during.as_ref().and_then(|info| sent_to(info, i));
        f.owed.store(sent.unwrap_or(0), Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    rt.block_on(fast_viewers_paid(&fast));
    // Viewers go first: a viewer that never reads would hold the server's graceful shutdown
    // up to its 10 s grace (and exit 1), which is a property of the viewer, not a server fault.
    rt.shutdown_timeout(Duration::from_secs(2));
    let after = tokio::runtime::Runtime::new()
        .expect("tokio runtime")
        .block_on(info_once_viewers_left(&addr));
    let alive = matches!(server.try_wait(), Ok(None));
    let clean_exit = alive && stop_server(&mut server);
    let log_panics = log_has_panic(&std::fs::read_to_string(&log).unwrap_or_default());
    let end = End {
        alive,
        clean_exit,
        log_panics,
        received_before,
        during,
        after,
    };
    let verdict = judge(&args, &samples, &fast, &churn, &end);
    print_summary(&samples, &churn, &args);
    let counters = end.after.as_ref().and_then(|i| i.counters);
    match counters {
        Some(c) => println!(
            "  server counters: {} frames captured, {} dropped as bad, {} capture errors, \
             {} capture starts, {} viewers admitted, {} rejected, {} panics",
            c.frames_captured,
            c.frames_dropped,
            c.capture_errors,
            c.capture_starts,
            c.viewers_total,
            c.viewers_rejected,
            c.panics
        ),
        None => println!("  server counters: GetInfo failed"),
    }
    for problem in &verdict {
        println!("FAIL: {problem}");
    }
    if verdict.is_empty() {
        println!("PASS (server log: {})", log.display());
        ExitCode::SUCCESS
    } else {
        println!("server log: {}", log.display());
        ExitCode::FAILURE
    }
}

/// The release server binary next to this example (target/release/examples/soak →
/// target/release/camcast), or `--server`.
fn server_path(args: &Args) -> PathBuf {
    if let Some(p) = &args.server {
        return p.clone();
    }
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join("camcast");
    if !path.exists() {
        eprintln!(
            "soak: {} not found; build it first: cargo build --release --bin camcast",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

fn spawn_server(args: &Args) -> (Child, String, PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("camcast-soak-{port}.log"));
    let source = if args.chaos.is_some() {
        "chaos:test-pattern"
    } else {
        "test-pattern"
    };
    let mut cmd = Command::new(server_path(args));
    cmd.args(["--listen", &addr, "--source", source, "--led", "none"])
        .args(["--log", "warn", "--fps", &args.fps.to_string()])
        .args(["--max-viewers", &(args.viewers + 16).to_string()])
        // Every viewer dials from 127.0.0.1: lift the per-address caps with the viewer cap.
        .args([
            "--max-connections-per-address",
            &(args.viewers + 16).to_string(),
        ])
        .args([
            "--max-viewers-per-address",
            &(args.viewers + 16).to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("server log file"));
    if let Some(c) = &args.chaos {
        cmd.args(["--chaos", c]);
    }
    let child = cmd.spawn().expect("start the camcast server");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr, log)
}

/// SIGTERM, then waits up to 15 s for exit status 0.
fn stop_server(server: &mut Child) -> bool {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) {
        if let Ok(Some(status)) = server.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = server.kill();
    false
}

/// A connection whose TCP socket the viewer can cut from under HTTP/2.
struct Conn {
    channel: camcast::client::Conn,
    socket: Arc<Mutex<Option<std::net::TcpStream>>>,
}

impl Conn {
    async fn open(addr: &str, small_window: bool) -> Result<Conn, tonic::transport::Error> {
        let socket = Arc::new(Mutex::new(None));
        let slot = socket.clone();
        let target = addr.to_string();
        let connector = tower::service_fn(move |_uri| {
            let (slot, target) = (slot.clone(), target.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&target).await?;
                tcp.set_nodelay(true)?;
                let std_tcp = tcp.into_std()?;
                *slot.lock().unwrap() = Some(std_tcp.try_clone()?);
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::TcpStream::from_std(std_tcp)?))
            }
        });
        let mut ep = Endpoint::from_shared(format!("http://{addr}"))?;
        if small_window {
            ep = ep
                .initial_stream_window_size(65_535)
                .initial_connection_window_size(65_535);
        }
        let channel = ep.connect_with_connector(connector).await?;
        Ok(Conn {
            channel: camcast::client::untokened(channel),
            socket,
        })
    }

    /// Vanishes: shuts the socket down under HTTP/2 (no RST_STREAM, no GOAWAY).
    fn vanish(self) {
        if let Some(s) = self.socket.lock().unwrap().take() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

async fn fast_viewer(addr: String, i: usize, me: Arc<Fast>, stop: Arc<AtomicBool>) {
    let conn = match Conn::open(&addr, false).await {
        Ok(c) => c,
        Err(_) => return me.broken.store(true, Ordering::SeqCst),
    };
    let opened = FrameStream::open(conn.channel.clone(), false, &fast_name(i), 0.0).await;
    let Ok(mut stream) = opened else {
        return me.broken.store(true, Ordering::SeqCst);
    };
    me.opened.store(true, Ordering::SeqCst);
    // After the stop, on until every frame the server says it sent has arrived.
    while !stop.load(Ordering::SeqCst)
        || me.frames.load(Ordering::SeqCst) < me.owed.load(Ordering::SeqCst)
    {
        match stream.next().await {
            Ok(Some(f)) if f.jpeg.starts_with(&[0xFF, 0xD8]) && f.jpeg.ends_with(&[0xFF, 0xD9]) => {
                me.frames.fetch_add(1, Ordering::Relaxed);
            }
            // The end of the run is not a break.
            _ if stop.load(Ordering::SeqCst) => return,
            _ => return me.broken.store(true, Ordering::SeqCst),
        }
    }
}

async fn churn_viewer(
    addr: String,
    role: Role,
    seed: u64,
    churn: Arc<Churn>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    // Spread the first connects over the first second.
    tokio::time::sleep(Duration::from_millis(rng.u64(0..1000))).await;
    while !stop.load(Ordering::SeqCst) {
        let stalled = matches!(role, Role::Stalled);
        let tutorial_api = rng.bool();
        churn.opens_started.fetch_add(1, Ordering::Relaxed);
        let conn = Conn::open(&addr, stalled).await;
        let opened = match &conn {
            Ok(c) => FrameStream::open(c.channel.clone(), tutorial_api, "churn", 0.0)
                .await
                .ok(),
            Err(_) => None,
        };
        let (Ok(conn), Some(mut stream)) = (conn, opened) else {
            churn.open_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        churn.connects.fetch_add(1, Ordering::Relaxed);
        let (watch_ms, pause_ms) = match role {
            Role::Churner => (rng.u64(500..8_000), 0..1),
            Role::Slow => (rng.u64(2_000..15_000), 50..500),
            Role::Stalled => (rng.u64(3_000..20_000), 0..1),
        };
        let until = tokio::time::Instant::now() + Duration::from_millis(watch_ms);
        let mut first = true;
        while tokio::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
            if stalled && !first {
                // Holds the stream open without polling it.
                tokio::time::sleep_until(until).await;
                break;
            }
            first = false;
            let read = tokio::time::timeout_at(until, stream.next()).await;
            match read {
                Err(_) => break, // watched long enough
                Ok(Ok(Some(_))) => {}
                Ok(_) => {
                    churn.stream_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            if pause_ms.end > 1 {
                tokio::time::sleep(Duration::from_millis(rng.u64(pause_ms.clone()))).await;
            }
        }
        conn.vanish();
        drop(stream);
        churn.vanishes.fetch_add(1, Ordering::Relaxed);
    }
}

/// The server's own account (GetInfo), to cross-check what the viewers saw.
async fn server_info(addr: &str) -> Option<camcast::pb::v1::CameraInfo> {
    let channel = Conn::open(addr, false).await.ok()?.channel;
    let info = camcast::client::camera_client(channel)
        .get_info(camcast::pb::v1::GetInfoRequest::default())
        .await
        .ok()?;
    Some(info.into_inner())
}

/// Frames the server says it sent fast viewer `i`.
fn sent_to(info: &camcast::pb::v1::CameraInfo, i: usize) -> Option<u64> {
    let name = fast_name(i);
    let v = info.viewers.iter().find(|v| v.name == name)?;
    Some(v.frames_sent)
}

/// Waits (up to 15 s, a hang guard) until every unbroken fast viewer has received what the
/// server says it sent; the judge then compares.
async fn fast_viewers_paid(fast: &[Arc<Fast>]) {
    let paid = |f: &Arc<Fast>| {
        f.broken.load(Ordering::SeqCst)
            || f.frames.load(Ordering::SeqCst) >= f.owed.load(Ordering::SeqCst)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !fast.iter().all(paid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GetInfo once the server counts no viewer, or the last answer after 30 s (longer than the
/// server's keepalive timeout, its slowest way of noticing a vanished viewer).
async fn info_once_viewers_left(addr: &str) -> Option<camcast::pb::v1::CameraInfo> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info = server_info(addr).await;
        let empty = info.as_ref().is_some_and(|i| i.viewers.is_empty());
        if empty || tokio::time::Instant::now() >= deadline {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The panic hook's mark, or Rust's default message for a panic before the hook is set.
fn log_has_panic(log: &str) -> bool {
    log.contains(camcast::panics::LOG_MARK) || log.contains("panicked at")
}

/// How the run ended, as seen from outside and by the server itself.
struct End {
    alive: bool,
    clean_exit: bool,
    log_panics: bool,
    /// Each fast viewer's frames just before `during` was asked.
    received_before: Vec<u64>,
    /// GetInfo at the end of the run, with the fast viewers still connected.
    during: Option<camcast::pb::v1::CameraInfo>,
    /// GetInfo after every viewer left.
    after: Option<camcast::pb::v1::CameraInfo>,
}

/// One row of the table.
struct Sample {
    t: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    /// Each fast viewer's frames in this second.
    fast_fps: Vec<f64>,
}

fn status_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

fn sample_until(args: &Args, pid: u32, fast: &[Arc<Fast>], churn: &Churn) -> Vec<Sample> {
    println!(
        "{:>5} {:>8} {:>5} {:>7} {:>22} {:>9} {:>9} {:>7}",
        "t s", "RSS KiB", "FDs", "threads", "fast fps (min/mean)", "connects", "vanishes", "errors"
    );
    let t0 = Instant::now();
    let mut last: Vec<u64> = vec![0; fast.len()];
    let mut last_t = t0;
    let mut samples = Vec::new();
    let mut tick = t0;
    while t0.elapsed() < args.duration {
        tick += Duration::from_secs(1);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        let dt = (now - last_t).as_secs_f64();
        last_t = now;
        let fast_fps: Vec<f64> = fast
            .iter()
            .zip(last.iter_mut())
            .map(|(f, prev)| {
                let n = f.frames.load(Ordering::Relaxed);
                let fps = (n - *prev) as f64 / dt;
                *prev = n;
                fps
            })
            .collect();
        let s = Sample {
            t: (now - t0).as_secs_f64(),
            rss_kib: status_field(pid, "VmRSS:"),
            fds: open_fds(pid),
            threads: status_field(pid, "Threads:"),
            fast_fps,
        };
        let (min, mean) = min_mean(&s.fast_fps);
        println!(
            "{:>5.0} {:>8} {:>5} {:>7} {:>22} {:>9} {:>9} {:>7}",
            s.t,
            s.rss_kib,
            s.fds,
            s.threads,
            format!("{min:.1} / {mean:.1}"),
            churn.connects.load(Ordering::Relaxed),
            churn.vanishes.load(Ordering::Relaxed),
            churn.open_errors.load(Ordering::Relaxed) + churn.stream_errors.load(Ordering::Relaxed),
        );
        samples.push(s);
    }
    samples
}

fn min_mean(xs: &[f64]) -> (f64, f64) {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    (min, xs.iter().sum::<f64>() / xs.len().max(1) as f64)
}

/// The growth rule (see the module doc): max of the last third ≤ max of the middle third ×
/// 1.05 + slack.
fn grows(samples: &[Sample], slack: u64, metric: impl Fn(&Sample) -> u64) -> Option<(u64, u64)> {
    let third = samples.len() / 3;
    let max = |s: &[Sample]| s.iter().map(&metric).max().unwrap_or(0);
    let (middle, last) = (max(&samples[third..2 * third]), max(&samples[2 * third..]));
    (last as f64 > middle as f64 * 1.05 + slack as f64).then_some((middle, last))
}

/// Each fast viewer's mean rate after the 5 s warm-up.
fn fast_means(samples: &[Sample], n: usize) -> Vec<f64> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t > 5.0).collect();
    (0..n)
        .map(|i| after.iter().map(|s| s.fast_fps[i]).sum::<f64>() / after.len().max(1) as f64)
        .collect()
}

fn judge(
    args: &Args,
    samples: &[Sample],
    fast: &[Arc<Fast>],
    churn: &Churn,
    end: &End,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, slack, metric) in [
        (
            "RSS (KiB)",
            2048,
            (|s: &Sample| s.rss_kib) as fn(&Sample) -> u64,
        ),
        ("open FDs", 8, |s: &Sample| s.fds),
        ("threads", 2, |s: &Sample| s.threads),
    ] {
        if let Some((middle, last)) = grows(samples, slack, metric) {
            problems.push(format!(
                "{name} grows: max {middle} in the middle third, {last} in the last"
            ));
        }
    }
    if args.chaos.is_none() {
        let floor = 0.9 * args.fps;
        for (i, mean) in fast_means(samples, fast.len()).iter().enumerate() {
            if *mean < floor {
                problems.push(format!(
                    "fast viewer {i} averaged {mean:.1} fps, below {floor:.1}"
                ));
            }
        }
    } else {
        let tail: Vec<&Sample> = samples.iter().rev().take(5).collect();
        for i in 0..fast.len() {
            if tail.iter().all(|s| s.fast_fps[i] == 0.0) {
                problems.push(format!("fast viewer {i} got no frame in the last 5 s"));
            }
        }
    }
    for (i, f) in fast.iter().enumerate() {
        if f.broken.load(Ordering::SeqCst) {
            problems.push(format!("fast viewer {i}'s stream broke"));
        }
    }
    let (open_errors, stream_errors) = (
        churn.open_errors.load(Ordering::SeqCst),
        churn.stream_errors.load(Ordering::SeqCst),
    );
    if open_errors + stream_errors > 0 {
        problems.push(format!(
            "viewers saw {open_errors} failed opens and {stream_errors} broken streams"
        ));
    }
    if !end.alive {
        problems.push("the server died during the run".into());
    } else if !end.clean_exit {
        problems.push("the server did not exit 0 within 15 s of SIGTERM".into());
    }
    if end.log_panics {
        problems.push(format!(
            "the server's log reports a panic (\"{}\")",
            camcast::panics::LOG_MARK
        ));
    }
    problems.extend(cross_check(fast, churn, end));
    problems
}

/// The server's own counters against what the viewers counted.
fn cross_check(fast: &[Arc<Fast>], churn: &Churn, end: &End) -> Vec<String> {
    let (Some(during), Some(after)) = (&end.during, &end.after) else {
        return vec!["GetInfo failed: the server's counters could not be checked".into()];
    };
    let mut problems = Vec::new();
    if !after.viewers.is_empty() {
        problems.push(format!(
            "the server still counts {} viewers after every viewer left",
            after.viewers.len()
        ));
    }
    let panics = [during, after]
        .iter()
        .filter_map(|i| i.counters.as_ref())
        .map(|c| c.panics)
        .max()
        .unwrap_or(0);
    if panics > 0 {
        problems.push(format!("GetInfo counts {panics} panics"));
    }
    // Each stream open the viewers saw succeed was admitted; the server can have admitted a
    // few more (opens cut short by the end of the run), never more than were begun.
    let fast_opened = fast
        .iter()
        .filter(|f| f.opened.load(Ordering::SeqCst))
        .count() as u64;
    let opened = churn.connects.load(Ordering::SeqCst) + fast_opened;
    let begun = churn.opens_started.load(Ordering::SeqCst) + fast.len() as u64;
    let admitted = after.counters.as_ref().map_or(0, |c| c.viewers_total);
    if !(opened..=begun).contains(&admitted) {
        problems.push(format!(
            "the server admitted {admitted} viewers; the viewers opened {opened} streams \
             and began {begun}"
        ));
    }
    // The server's per-viewer frames_sent, bracketed by what the fast viewer had received
    // before GetInfo and what it received in the end (TCP loses nothing in between).
    for (i, f) in fast.iter().enumerate() {
        if f.broken.load(Ordering::SeqCst) {
            continue; // reported above
        }
        let (before, got) = (end.received_before[i], f.frames.load(Ordering::SeqCst));
        match sent_to(during, i) {
            None => problems.push(format!("GetInfo does not list fast viewer {i}")),
            Some(sent) if sent < before || sent > got => problems.push(format!(
                "the server says it sent fast viewer {i} {sent} frames; it had received \
                 {before} before asking and {got} in all"
            )),
            Some(_) => {}
        }
    }
    problems
}

fn print_summary(samples: &[Sample], churn: &Churn, args: &Args) {
    let col = |f: fn(&Sample) -> u64| {
        let v: Vec<u64> = samples.iter().map(f).collect();
        (
            v.first().copied().unwrap_or(0),
            v.last().copied().unwrap_or(0),
            v.iter().copied().max().unwrap_or(0),
        )
    };
    let (r0, r1, rmax) = col(|s| s.rss_kib);
    let (f0, f1, fmax) = col(|s| s.fds);
    let (t0, t1, tmax) = col(|s| s.threads);
    let means = fast_means(samples, args.fast);
    let (mean_min, mean_mean) = min_mean(&means);
    let worst_second = samples
        .iter()
        .filter(|s| s.t > 5.0)
        .flat_map(|s| s.fast_fps.iter().copied())
        .fold(f64::INFINITY, f64::min);
    println!("\nsummary (seed {}):", args.seed);
    println!(
        "  RSS MiB   start {:.1}  end {:.1}  max {:.1}",
        r0 as f64 / 1024.0,
        r1 as f64 / 1024.0,
        rmax as f64 / 1024.0
    );
    println!("  open FDs  start {f0}  end {f1}  max {fmax}");
    println!("  threads   start {t0}  end {t1}  max {tmax}");
    println!(
        "  fast viewers' fps after 5 s: mean of means {mean_mean:.1}, lowest mean {mean_min:.1}, \
         worst single second {worst_second:.0}"
    );
    println!(
        "  churn: {} connects, {} vanishes, {} failed opens, {} stream errors",
        churn.connects.load(Ordering::Relaxed),
        churn.vanishes.load(Ordering::Relaxed),
        churn.open_errors.load(Ordering::Relaxed),
        churn.stream_errors.load(Ordering::Relaxed)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rss: impl Fn(usize) -> u64) -> Vec<Sample> {
        (0..90)
            .map(|i| Sample {
                t: i as f64 + 1.0,
                rss_kib: rss(i),
                fds: 100,
                threads: 4,
                fast_fps: vec![30.0],
            })
            .collect()
    }

    #[test]
    fn growth_rule_passes_a_plateau_and_fails_a_steady_leak() {
        // Warm-up growth, then flat with noise: passes.
        let plateau = run(|i| 12_000 + (i.min(20) as u64) * 200 + (i as u64 % 3) * 100);
        assert_eq!(grows(&plateau, 2048, |s| s.rss_kib), None);
        // 200 KiB a second, every second: 6 MiB between the thirds' maxima.
        let leak = run(|i| 12_000 + i as u64 * 200);
        assert!(grows(&leak, 2048, |s| s.rss_kib).is_some());
        // One FD more a second: 30 more in the last third (the closure sets the first metric).
        let fds = run(|i| 100 + i as u64);
        assert!(grows(&fds, 8, |s| s.rss_kib).is_some());
        let flat_fds = run(|i| 100 + (i as u64 % 5));
        assert_eq!(grows(&flat_fds, 8, |s| s.rss_kib), None);
    }

    fn info(viewers: &[(&str, u64)], admitted: u64, panics: u64) -> camcast::pb::v1::CameraInfo {
        camcast::pb::v1::CameraInfo {
            viewers: viewers
                .iter()
                .map(|(name, sent)| camcast::pb::v1::Viewer {
                    name: name.to_string(),
                    frames_sent: *sent,
                    ..Default::default()
                })
                .collect(),
            counters: Some(camcast::pb::v1::Counters {
                viewers_total: admitted,
                panics,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// One fast viewer that received 100 frames (90 before GetInfo) and 50 churn opens, 49
    /// of them completed.
    fn world() -> (Vec<Arc<Fast>>, Churn) {
        let f = Fast::default();
        f.opened.store(true, Ordering::SeqCst);
        f.frames.store(100, Ordering::SeqCst);
        let churn = Churn::default();
        churn.opens_started.store(50, Ordering::SeqCst);
        churn.connects.store(49, Ordering::SeqCst);
        (vec![Arc::new(f)], churn)
    }

    fn check(
        during: camcast::pb::v1::CameraInfo,
        after: camcast::pb::v1::CameraInfo,
    ) -> Vec<String> {
        let (fast, churn) = world();
        let end = End {
            alive: true,
            clean_exit: true,
            log_panics: false,
            received_before: vec![90],
            during: Some(during),
            after: Some(after),
        };
        cross_check(&fast, &churn, &end)
    }

    #[test]
    fn the_servers_counters_are_cross_checked() {
        let during = || info(&[("fast-0", 95)], 0, 0);
        assert!(check(during(), info(&[], 50, 0)).is_empty());
        assert!(
            check(during(), info(&[], 51, 0)).is_empty(),
            "one open cut short"
        );
        let said =
            |p: Vec<String>, what: &str| assert!(p.iter().any(|m| m.contains(what)), "{p:?}");
        said(check(during(), info(&[], 49, 0)), "admitted 49 viewers");
        said(check(during(), info(&[], 52, 0)), "admitted 52 viewers");
        said(
            check(during(), info(&[("x", 1)], 50, 0)),
            "still counts 1 viewers",
        );
        said(check(during(), info(&[], 50, 1)), "counts 1 panics");
        said(
            check(info(&[("fast-0", 101)], 0, 0), info(&[], 50, 0)),
            "sent fast viewer 0 101",
        );
        said(
            check(info(&[("fast-0", 89)], 0, 0), info(&[], 50, 0)),
            "sent fast viewer 0 89",
        );
        said(
            check(info(&[], 0, 0), info(&[], 50, 0)),
            "does not list fast viewer 0",
        );
        assert!(log_has_panic("x PANIC (a bug in camcast): boom"));
        assert!(log_has_panic("thread 'main' panicked at src/main.rs:1:1"));
        assert!(!log_has_panic("all good"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("120s"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("-3s"), None);
        assert_eq!(parse_duration("soon"), None);
    }
}
