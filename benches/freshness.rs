//! How fresh are the frames camcast's own viewer reads when it reads slower than the camera?
//! The library's `FrameStream` as camcast-view opens it (PullFrames), reading at a fixed rate
//! from an in-process server's 30 fps test pattern over loopback; next to it, the same reader
//! on StreamFrames (tonic's HTTP/2 client, which returns credit in batches).
//!
//!     cargo bench --bench freshness              # 30 s a row (about 5 minutes)
//!     cargo bench --bench freshness -- --quick   # 10 s a row, 640x480 only
//!
//! Frame age: when the reader got the frame minus the frame's capture time (one host, one
//! clock). Each read comes at a random point of a capture interval. Per row: delivered fps, mean age, worst age over the last 10 s of the run, and the
//! frames the server skipped for the reader.

use std::time::{Duration, Instant};

use camcast::client::{self, FrameStream};
use camcast::config::Config;
use camcast::server::{self, Listeners};
use tokio_util::sync::CancellationToken;

#[path = "common/machine.rs"]
mod machine;

const FPS: u32 = 30;
const LAST: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
enum Api {
    Pull,
    Stream,
}

struct Row {
    fps: f64,
    mean_ms: f64,
    worst_last_ms: f64,
    skipped: u64,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (sizes, run): (&[&str], _) = if quick {
        (&["640x480"], Duration::from_secs(10))
    } else {
        (&["640x480", "1920x1080"], Duration::from_secs(30))
    };
    println!(
        "machine: {}, {} cores; {FPS} fps test pattern; {run:?} a row",
        machine::cpu_model(&machine::cpuinfo()),
        machine::cores()
    );
    println!("\n| size | API | reader fps | delivered fps | mean age ms | worst age ms, last 10 s | skipped |");
    println!("|---|---|---|---|---|---|---|");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    for size in sizes {
        rt.block_on(async {
            let (addr, stop) = start_server(size).await;
            for (api, name) in [(Api::Pull, "PullFrames"), (Api::Stream, "StreamFrames")] {
                for reader_fps in [2.0, 10.0] {
                    let r = read_at(&addr, api, reader_fps, run).await;
                    println!(
                        "| {size} | {name} | {reader_fps} | {:.1} | {:.1} | {:.1} | {} |",
                        r.fps, r.mean_ms, r.worst_last_ms, r.skipped
                    );
                }
            }
            stop.cancel();
        });
    }
}

/// camcast's server on a loopback port, serving the test pattern at `size`.
async fn start_server(size: &str) -> (String, CancellationToken) {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nled = \"none\"\nmdns = false\n\
         [camera]\nsource = \"test-pattern\"\nsize = \"{size}\"\nfps = {FPS}\n"
    );
    let config = Config::from_toml(&toml).expect("bench config");
    let listeners = Listeners::bind(&config).await.expect("bind");
    let addr = listeners.local_addrs().expect("address").grpc.to_string();
    let stop = CancellationToken::new();
    tokio::spawn(server::run(config, listeners, stop.clone()));
    (addr, stop)
}

/// One viewer reading `reader_fps` frames a second for `run`.
async fn read_at(addr: &str, api: Api, reader_fps: f64, run: Duration) -> Row {
    let channel = client::connect(addr, Duration::from_secs(10))
        .await
        .expect("connect");
    let mut stream = match api {
        Api::Pull => FrameStream::open(channel, false, "freshness-bench", 0.0).await,
        Api::Stream => FrameStream::stream(channel, "freshness-bench", 0.0).await,
    }
    .expect("open");
    let period = Duration::from_secs_f64(1.0 / reader_fps);
    let start = Instant::now();
    let mut next_read = start;
    let (mut ages, mut skipped) = (Vec::new(), 0);
    while start.elapsed() < run {
        let frame = stream.next().await.expect("frame").expect("stream open");
        let age = frame.latency().expect("a capture time");
        ages.push((start.elapsed(), age.as_secs_f64() * 1000.0));
        skipped += frame.skipped;
        // Each read at a random point of a frame interval: a reader's period that is a
        // multiple of the camera's would otherwise always read at the same phase.
        next_read += period;
        let jitter = Duration::from_micros(fastrand::u64(0..1_000_000 / u64::from(FPS)));
        tokio::time::sleep_until((next_read + jitter).max(Instant::now()).into()).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mean_ms = ages.iter().map(|(_, a)| a).sum::<f64>() / ages.len() as f64;
    let worst_last_ms = ages
        .iter()
        .filter(|(at, _)| *at + LAST >= run)
        .map(|(_, a)| *a)
        .fold(0.0, f64::max);
    Row {
        fps: ages.len() as f64 / elapsed,
        mean_ms,
        worst_last_ms,
        skipped,
    }
}
