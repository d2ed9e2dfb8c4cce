//! What the benchmark reads from /proc: a process's CPU time and peak RSS, and the whole
//! guest's busy time.

/// utime + stime of a process (all its threads), in seconds. `pid` may be "self".
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(close) = stat.rfind(')') else {
        return f64::NAN;
    };
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    match (field(11), field(12)) {
        (Some(u), Some(s)) => (u + s) / clock_ticks(),
        _ => f64::NAN,
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// Peak resident set size (VmHWM) of a process in MiB.
pub fn peak_rss_mib(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// (busy, total) jiffies of all CPUs together, from the first line of /proc/stat. Busy is
/// everything but idle and iowait, so it includes the kernel's own work (e.g. vivid drawing
/// its test pattern, the loopback network).
pub fn guest_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU seconds of each thread of a process, keyed by thread id, with the thread's name.
pub fn thread_cpu(pid: &str) -> Vec<(u32, String, f64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let path = format!("{pid}/task/{tid}");
        let name = std::fs::read_to_string(format!("/proc/{path}/comm")).ok()?;
        let cpu = cpu_seconds(&path);
        cpu.is_finite().then(|| (tid, name.trim().to_string(), cpu))
    })
    .collect()
}

/// CPU seconds per thread name between two [`thread_cpu`] snapshots. A thread that started in
/// between counts in full; one that ended in between is lost (servers here keep their threads).
/// Trailing digits are dropped from names, so numbered workers add up.
pub fn thread_cpu_delta(
    before: &[(u32, String, f64)],
    after: &[(u32, String, f64)],
) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for (tid, name, cpu) in after {
        let start = before.iter().find(|b| b.0 == *tid).map_or(0.0, |b| b.2);
        let key = name
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_string();
        match out.iter_mut().find(|o| o.0 == key) {
            Some(o) => o.1 += cpu - start,
            None => out.push((key, cpu - start)),
        }
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}
