//! What the bench prints: the setup, and its tables, each captioned with its date, commit and
//! machine.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use crate::freshness::{FreshRow, READER_FPS};
use crate::{machine, Case, Measured, Opts, Row, Side, QUALITY};

/// "date, commit, machine" for every table. The guest has no git and no view of the host:
/// .ci/vm-bench passes the commit and the host in VM_COMPARE_COMMIT and VM_COMPARE_HOST.
pub fn caption() -> String {
    let date = humantime::format_rfc3339_seconds(SystemTime::now());
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let commit = env("VM_COMPARE_COMMIT").unwrap_or_else(|| "unknown".into());
    let cpu = machine::cpu_model(&machine::cpuinfo());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let host = env("VM_COMPARE_HOST").map_or(String::new(), |h| format!(" on {h}"));
    format!(
        "{date}, commit {commit}, qemu guest ({cpu}, {} vCPUs, kernel {}){host}",
        machine::cores(),
        kernel.trim()
    )
}

pub fn print_setup(opts: &Opts, caption: &str) {
    let cpuinfo = machine::cpuinfo();
    let flags = Some(cpuinfo.as_str())
        .and_then(|c| {
            let line = c.lines().find(|l| l.starts_with("flags"))?.to_string();
            let have: Vec<&str> = line.split_whitespace().collect();
            let simd: Vec<&str> = ["sse2", "ssse3", "sse4_2", "avx", "avx2", "avx512f"]
                .into_iter()
                .filter(|f| have.contains(f))
                .collect();
            Some(simd.join(" "))
        })
        .unwrap_or_default();
    println!("vm_compare: {caption}");
    println!("guest SIMD: {flags}; servers, viewers and vivid share the vCPUs");
    let version = |bin: &Path, arg: &str, lib: Option<&String>| {
        let mut c = Command::new(bin);
        c.arg(arg);
        if let Some(l) = lib {
            c.env("LD_LIBRARY_PATH", l);
        }
        c.output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|e| format!("unavailable: {e}"))
    };
    println!(
        "camcast: {} ({})",
        version(&opts.camcast, "--version", None),
        opts.camcast.display()
    );
    println!(
        "µStreamer: {} ({}){}",
        version(&opts.ustreamer, "--version", opts.ustreamer_lib.as_ref()),
        opts.ustreamer.display(),
        if opts.ustreamer_args.is_empty() {
            String::new()
        } else {
            format!(" extra args: {}", opts.ustreamer_args.join(" "))
        }
    );
    println!("camcast gRPC viewers read camcast.v1 {}", opts.grpc.name());
    println!(
        "JPEG quality {QUALITY} for both; warm-up {:.1} s, window {:.1} s, {} run(s) per side and configuration; freshness: {READER_FPS} fps reader for {:.0} s, ages over the last {:.0} s\n",
        opts.warmup.as_secs_f64(),
        opts.window.as_secs_f64(),
        opts.repeat,
        opts.fresh_run.as_secs_f64(),
        opts.fresh_tail.as_secs_f64()
    );
}

pub fn print_tables(rows: &[Row], fresh: &[FreshRow], cases: &[&Case], opts: &Opts, caption: &str) {
    let find = |case: &str, n: usize, side: Side| {
        rows.iter()
            .find(|r| r.case == case && r.viewers == n && r.side == side)
            .and_then(|r| r.result.as_ref().ok())
    };
    let cell = |m: Option<&Measured>, f: fn(&Measured) -> String| m.map_or("–".into(), f);
    let ratio = |a: Option<&Measured>, b: Option<&Measured>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a.cpu_ms_per_frame / b.cpu_ms_per_frame),
        _ => "–".into(),
    };
    println!("\nServer CPU per delivered frame and fps per viewer (mean of the runs; goals: camcast HTTP ≤ 0.8× µStreamer, camcast gRPC ≤ 1.2× camcast HTTP, fps ≥ µStreamer's); {caption}\n");
    println!("| case | viewers | fps per viewer: µStreamer HTTP | camcast HTTP | camcast gRPC | server CPU ms / delivered frame: µStreamer HTTP | camcast HTTP | camcast gRPC | camcast HTTP ÷ µStreamer | camcast gRPC ÷ camcast HTTP |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for case in cases {
        for &n in &opts.viewers {
            let (u, h, g) = (
                find(case.name, n, Side::Ustreamer),
                find(case.name, n, Side::CamcastHttp),
                find(case.name, n, Side::CamcastGrpc),
            );
            let fps = |m: &Measured| format!("{:.1}", m.fps_mean);
            let cpu = |m: &Measured| format!("{:.2}", m.cpu_ms_per_frame);
            println!(
                "| {} | {n} | {} | {} | {} | {} | {} | {} | {} | {} |",
                case.name,
                cell(u, fps),
                cell(h, fps),
                cell(g, fps),
                cell(u, cpu),
                cell(h, cpu),
                cell(g, cpu),
                ratio(h, u),
                ratio(g, h),
            );
        }
    }

    if !fresh.is_empty() {
        println!("\nFreshness: one reader at {READER_FPS} fps (reads a frame, sleeps until its next tick) for {:.0} s; age = read time − the frame's V4L2 timestamp, as each server reports it (camcast X-Timestamp / v1 captured_at, µStreamer X-UStreamer-Grab-Time), on the same clock; {caption}\n", opts.fresh_run.as_secs_f64());
        println!(
            "| case | side | reads / s | worst age ms (last {:.0} s) | mean age ms | frames skipped per read |",
            opts.fresh_tail.as_secs_f64()
        );
        println!("|---|---|---|---|---|---|");
        for f in fresh {
            match &f.result {
                Ok(r) => println!(
                    "| {} | {} | {:.1} | {:.0} | {:.0} | {} |",
                    f.case,
                    f.side.name(),
                    r.read_fps,
                    r.worst_ms,
                    r.mean_ms,
                    r.skipped_per_read
                        .map_or("– (no sequence numbers)".into(), |s| format!("{s:.1}"))
                ),
                Err(e) => println!(
                    "| {} | {} | failed: {} ||||",
                    f.case,
                    f.side.name(),
                    format!("{e:#}").lines().next().unwrap_or("")
                ),
            }
        }
    }

    println!("\nDetails; {caption}\n");
    println!("| case | viewers | side | source fps | fps per viewer (slowest) | server CPU ms / delivered frame (each run) | server CPU % of a core | KiB / frame | JPEG | server peak RSS MiB | viewers' CPU % | guest busy % | server CPU by thread |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        match &r.result {
            Ok(m) => println!(
                "| {} | {} | {} | {:.1} | {:.1} ({:.1}) | {:.2} ({}) | {:.0} | {:.1} | {} | {:.1} | {:.0} | {:.0} | {} |",
                r.case,
                r.viewers,
                r.side.name(),
                m.source_fps,
                m.fps_mean,
                m.fps_min,
                m.cpu_ms_per_frame,
                m.runs_cpu_ms
                    .iter()
                    .map(|v| format!("{v:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                m.cpu_pct,
                m.kib_per_frame,
                m.shape,
                m.rss_mib,
                m.viewers_cpu_pct,
                m.guest_busy_pct,
                m.thread_shares()
            ),
            Err(e) => println!(
                "| {} | {} | {} | failed: {} ||||||||||",
                r.case,
                r.viewers,
                r.side.name(),
                format!("{e:#}").lines().next().unwrap_or("")
            ),
        }
    }
}
