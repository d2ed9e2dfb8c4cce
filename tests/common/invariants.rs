//! What every server-level test must leave as it found it, checked in one place: no viewer left
//! registered, capture stopped once the linger is over, no descriptor leaked, no panic.
//!
//! In-process servers ([`super::TestServer`]) check these in `stop()`; spawned servers
//! ([`super::ServerProcess`]) in theirs. A server dropped without being stopped fails its test,
//! so no test can forget.
//!
//! **Descriptors.** An in-process server's sockets are this process's descriptors, and the test
//! harness runs tests in parallel threads of one process: a count taken while another test's
//! server runs would see that test's sockets too. So each test binary runs its server tests one
//! at a time: a [`Session`] (held from launch until the last check) takes a binary-wide lock, and
//! the count is compared with the one taken when the session began. Tests without a server may
//! still run alongside; the check therefore waits for the count to come back to *at most* the
//! baseline, so a descriptor another test opens for a moment delays it and a leak fails it.
//! Every test's tokio runtime holds an epoll and an eventfd descriptor, opened before the test
//! can take the lock; those two kinds are not counted in this process (a server opens none of
//! its own). Spawned servers are counted in `/proc/PID/fd`, every kind, which nothing else
//! shares.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Once};
use std::time::Duration;

/// Bound on waiting for an invariant to hold: a hang guard, not a timing assertion.
pub const SETTLE: Duration = Duration::from_secs(20);

/// One server test at a time per test binary (see the module docs).
static SERIAL: LazyLock<Arc<tokio::sync::Mutex<()>>> = LazyLock::new(Default::default);

/// Installs camcast's panic hook (it counts every panic in `camcast::panics::count()`, which
/// GetInfo and `/info.json` report) once per test binary, chained with the default hook so a
/// failing test still prints its message and location where the harness shows them.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        camcast::panics::install_hook();
        let counting = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            counting(info);
            default(info);
        }));
    });
}

/// What every tokio runtime holds (its epoll instance and its waker). Each test has its own
/// runtime, created before its body runs, so a test waiting for the lock has already opened
/// these: they are not counted in this process. A server creates no runtime of its own, and
/// spawned servers are counted whole.
const RUNTIME_DESCRIPTORS: [&str; 2] = ["anon_inode:[eventpoll]", "anon_inode:[eventfd]"];

/// Opened once per process on first use and kept by design, not per request: the `getrandom`
/// crate falls back to a kept-open /dev/urandom where the getrandom syscall is missing (as under
/// qemu-user, CI's aarch64 suite), so the first TLS handshake or random draw adds it.
const PROCESS_SINGLETONS: [&str; 2] = ["/dev/urandom", "/dev/random"];

/// The open descriptors of process `pid` ("self" for this one): number → what it points at.
/// In this process, the test runtimes' own are left out (see [`RUNTIME_DESCRIPTORS`]); in
/// every process, [`PROCESS_SINGLETONS`].
pub fn descriptors(pid: &str) -> BTreeMap<u32, String> {
    let dir = format!("/proc/{pid}/fd");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".into());
            let runtime = pid == "self" && RUNTIME_DESCRIPTORS.contains(&target.as_str());
            let singleton = PROCESS_SINGLETONS.contains(&target.as_str());
            (!runtime && !singleton).then_some((fd, target))
        })
        .collect()
}

/// The descriptors of `now` that `baseline` did not have, judged by what they point at: a
/// socket or pipe is new if no descriptor pointed at it before (the signal receiver every test
/// runtime dups from one process-wide socket is not), anything else (files, devices,
/// anonymous inodes) if there are more of its kind than before.
fn new_descriptors<'a>(
    baseline: &BTreeMap<u32, String>,
    now: &'a BTreeMap<u32, String>,
) -> Vec<(&'a u32, &'a String)> {
    let count = |map: &BTreeMap<u32, String>, t: &str| map.values().filter(|v| *v == t).count();
    now.iter()
        .filter(|(_, target)| {
            let before = count(baseline, target);
            if target.starts_with("socket:[") || target.starts_with("pipe:[") {
                before == 0
            } else {
                count(now, target) > before
            }
        })
        .collect()
}

/// Waits until `pid` holds no descriptor it did not hold at `baseline` (see
/// [`new_descriptors`]); fails naming the new ones.
pub async fn descriptors_return_to(pid: &str, baseline: &BTreeMap<u32, String>, whose: &str) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let now = descriptors(pid);
        let new = new_descriptors(baseline, &now);
        if new.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let new: Vec<_> = new
                .iter()
                .map(|(fd, target)| format!("{fd} → {target}{}", socket_endpoints(pid, target)))
                .collect();
            panic!(
                "{whose} still holds descriptors it did not hold before the test (a leak, or a \
                 client the test did not drop): {new:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// For a socket, its addresses and state from `/proc/PID/net/tcp{,6}` (what a failure
/// message needs to say whose socket it is).
fn socket_endpoints(pid: &str, target: &str) -> String {
    let Some(inode) = target
        .strip_prefix("socket:[")
        .and_then(|t| t.strip_suffix(']'))
    else {
        return String::new();
    };
    for table in ["tcp", "tcp6", "udp", "udp6", "unix", "netlink"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if !f.contains(&inode) {
                continue;
            }
            if !table.starts_with("tcp") && !table.starts_with("udp") {
                return format!(" ({table}: {line})");
            }
            if f.get(9) == Some(&inode) {
                let port = |a: &str| {
                    a.rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        .unwrap_or(0)
                };
                return format!(
                    " ({table} local port {} remote port {} state {})",
                    port(f[1]),
                    port(f[2]),
                    f[3]
                );
            }
        }
    }
    String::new()
}

/// Every viewer slot given back (within [`SETTLE`]): after a test's clients are gone, and
/// again after shutdown.
pub async fn no_viewer_left(hub: &camcast::hub::Hub) {
    within(SETTLE, "the viewer count returns to 0", || async {
        hub.viewer_count() == 0
    })
    .await;
}

/// Polls `cond` until it holds; fails with `what` after `bound`.
pub async fn within<F, Fut>(bound: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "invariant broken: {what} (waited {bound:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fails if a panic was counted since `before` (camcast's hook counts every panic in the
/// process: in the server's tasks and threads, and in the test's own).
pub fn no_panic_since(before: u64) {
    let now = camcast::panics::count();
    assert_eq!(
        now,
        before,
        "{} panic(s) while the server ran: a panic in the server is a bug (the message is \
         printed above)",
        now - before
    );
}

/// A server test's claim on the binary-wide lock, and what the process was like when it began.
pub struct Session {
    _serial: tokio::sync::OwnedMutexGuard<()>,
    descriptors: BTreeMap<u32, String>,
    panics: u64,
}

impl Session {
    /// Waits for any other server test of this binary to finish, then takes the baseline.
    pub async fn begin() -> Session {
        install_panic_hook();
        let serial = SERIAL.clone().lock_owned().await;
        Session {
            _serial: serial,
            descriptors: descriptors("self"),
            panics: camcast::panics::count(),
        }
    }

    pub fn panics_before(&self) -> u64 {
        self.panics
    }

    /// Once the server and the test's clients are gone: descriptors back to the baseline, and
    /// no panic since the session began.
    pub async fn check_after(&self) {
        descriptors_return_to("self", &self.descriptors, "the test process").await;
        no_panic_since(self.panics);
    }
}
