//! Freshness: one reader slower than the camera on each side, and how old the frames it reads
//! are. Age = the reader's clock when a part is read − the frame's V4L2 buffer timestamp as the
//! server reports it, on the same clock (see the bench's module docs for each server's header).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use camcast::client::FrameStream;

use crate::{http, Case, Opts, Running, Side};

/// The reader's rate.
pub const READER_FPS: f64 = 10.0;

/// A freshness run's result.
pub struct Fresh {
    pub worst_ms: f64,
    pub mean_ms: f64,
    pub read_fps: f64,
    /// Sequence numbers the reader skipped per read (camcast only), over the tail.
    pub skipped_per_read: Option<f64>,
}

pub struct FreshRow {
    pub case: &'static str,
    pub side: Side,
    pub result: anyhow::Result<Fresh>,
}

/// The clock a frame's capture time is on.
#[derive(Clone, Copy)]
enum Stamp {
    /// Unix seconds (camcast).
    Wall(f64),
    /// CLOCK_MONOTONIC seconds (µStreamer's grab time).
    Monotonic(f64),
}

impl Stamp {
    /// How long ago that was, by the same clock read now.
    fn age(self) -> Duration {
        let (now, then) = match self {
            Stamp::Wall(t) => (
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
                t,
            ),
            Stamp::Monotonic(t) => (monotonic_now(), t),
        };
        Duration::from_secs_f64((now - then).max(0.0))
    }
}

fn monotonic_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A stream read one frame at a time: (capture time, sequence number if the server sends one).
enum SlowStream {
    Grpc(FrameStream),
    Http(http::PartReader<tokio::net::TcpStream>, Side),
}

impl SlowStream {
    async fn open(side: Side, opts: &Opts, server: &Running) -> anyhow::Result<Self> {
        Ok(match side {
            Side::CamcastGrpc => {
                SlowStream::Grpc(opts.grpc.open(server.grpc, "vm-compare-slow").await?)
            }
            Side::CamcastHttp => SlowStream::Http(
                http::PartReader::connect(server.http, "/stream.mjpg?name=vm-compare-slow").await?,
                side,
            ),
            // extra_headers=1: the grab time (capture time) comes only with them.
            Side::Ustreamer => SlowStream::Http(
                http::PartReader::connect(server.http, "/stream?extra_headers=1").await?,
                side,
            ),
        })
    }

    async fn next(&mut self) -> anyhow::Result<(Stamp, Option<u64>)> {
        match self {
            SlowStream::Grpc(s) => {
                let f = s
                    .next()
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("camcast ended the stream"))?;
                let at = f
                    .captured_at
                    .context("a v1 frame without its capture time")?;
                let unix = at.duration_since(UNIX_EPOCH).unwrap_or_default();
                Ok((Stamp::Wall(unix.as_secs_f64()), f.seq))
            }
            SlowStream::Http(r, side) => {
                let p = r.next_part(false).await?;
                let stamp = match side {
                    Side::Ustreamer => p.grab_time.map(Stamp::Monotonic),
                    _ => p.x_timestamp.map(Stamp::Wall),
                };
                Ok((stamp.context("a part without its capture time")?, p.seq))
            }
        }
    }
}

/// One reader at [`READER_FPS`] (reads a frame, sleeps until its next tick) on its own server.
pub async fn run(case: &Case, side: Side, opts: &Opts) -> anyhow::Result<Fresh> {
    let server = Running::start(case, side, 1, opts).await?;
    let r = slow_reader(side, opts, &server).await;
    server.finish(r, opts.log_tail)
}

async fn slow_reader(side: Side, opts: &Opts, server: &Running) -> anyhow::Result<Fresh> {
    let mut stream = SlowStream::open(side, opts, server).await?;
    let period = Duration::from_secs_f64(1.0 / READER_FPS);
    let t0 = Instant::now();
    let mut next_read = t0;
    // (since start, age, sequence number)
    let mut reads: Vec<(Duration, Duration, Option<u64>)> = Vec::new();
    while t0.elapsed() < opts.fresh_run {
        tokio::time::sleep_until(next_read.into()).await;
        let (stamp, seq) = stream.next().await?;
        reads.push((t0.elapsed(), stamp.age(), seq));
        // Behind schedule, the next read comes at once, not in a burst.
        next_read = (next_read + period).max(Instant::now());
    }
    if reads.len() < 3 {
        bail!("the reader got {} frames", reads.len());
    }
    let end = reads.last().unwrap().0;
    let tail: Vec<&(Duration, Duration, Option<u64>)> = reads
        .iter()
        .filter(|(t, _, _)| *t + opts.fresh_tail >= end)
        .collect();
    let ages: Vec<f64> = tail.iter().map(|r| r.1.as_secs_f64() * 1000.0).collect();
    let seqs: Vec<u64> = tail.iter().filter_map(|r| r.2).collect();
    let skipped_per_read = (seqs.len() == tail.len() && seqs.len() >= 2)
        .then(|| (seqs[seqs.len() - 1] - seqs[0]) as f64 / (seqs.len() - 1) as f64 - 1.0);
    Ok(Fresh {
        worst_ms: ages.iter().copied().fold(0.0, f64::max),
        mean_ms: ages.iter().sum::<f64>() / ages.len() as f64,
        read_fps: (reads.len() - 1) as f64 / (end - reads[0].0).as_secs_f64(),
        skipped_per_read,
    })
}
