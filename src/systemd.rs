//! systemd integration for `Type=notify` services: the `sd_notify(3)` protocol, spoken directly
//! (a datagram of `KEY=VALUE` lines to the Unix socket named by `$NOTIFY_SOCKET`).
//!
//! What camcast tells systemd:
//!
//! | message       | when                                                                     |
//! |---------------|--------------------------------------------------------------------------|
//! | `READY=1`     | once the gRPC listener is bound (connections queue from then on)         |
//! | `STATUS=…`    | with `READY=1`, then at every appliance state change (`systemctl status`) |
//! | `WATCHDOG=1`  | every half `$WATCHDOG_USEC`, from a tokio task, when the watchdog is ours |
//! | `STOPPING=1`  | when shutdown begins                                                     |
//!
//! Without `$NOTIFY_SOCKET` (started by hand, in tests, under another supervisor) every call is
//! a no-op. Sending never blocks and never fails the caller: systemd is told what it can be
//! told, and a failure is logged once at debug level per message.
//!
//! The watchdog task proves that tokio's scheduler still runs tasks; if the runtime wedges, the
//! pings stop and systemd (with `WatchdogSec=` in the unit) kills and restarts camcast.
//!
//! Environment variables are process-global, so only [`Notifier::from_env`] and
//! [`watchdog_from_env`] read them; everything else takes the values as parameters, which is
//! how the tests drive it against a real socket in a temporary directory.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::status::{Status, StatusCell};

/// Sends `sd_notify` messages to the service manager, or does nothing when there is none.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// A notifier that never sends anything.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// Reads `$NOTIFY_SOCKET`. Absent, empty or unusable → a disabled notifier.
    pub fn from_env() -> Notifier {
        Notifier::from_socket(std::env::var_os("NOTIFY_SOCKET").as_deref())
    }

    /// The notifier for a `$NOTIFY_SOCKET` value: a filesystem path (`/run/systemd/notify`) or
    /// an abstract socket name written with a leading `@`. Other forms (e.g. `vsock:`) and
    /// socket errors give a disabled notifier, logged at debug level.
    pub fn from_socket(value: Option<&OsStr>) -> Notifier {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Notifier::disabled();
        };
        match Self::open(value) {
            Ok(target) => Notifier {
                target: Some(target),
            },
            Err(e) => {
                tracing::debug!(socket = ?value, "sd_notify disabled: {e}");
                Notifier::disabled()
            }
        }
    }

    fn open(value: &OsStr) -> io::Result<(UnixDatagram, SocketAddr)> {
        let bytes = value.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(Path::new(value))?,
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&bytes[1..])?
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "NOTIFY_SOCKET is neither a path nor an @abstract name",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        // A full socket buffer must not stall a runtime thread: drop the message instead.
        socket.set_nonblocking(true)?;
        Ok((socket, addr))
    }

    /// Whether messages go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one datagram of newline-separated `KEY=VALUE` assignments. A no-op when disabled.
    pub fn notify(&self, message: &str) -> io::Result<()> {
        match &self.target {
            Some((socket, addr)) => socket.send_to_addr(message.as_bytes(), addr).map(|_| ()),
            None => Ok(()),
        }
    }

    /// [`notify`](Self::notify), with a failure logged rather than returned.
    fn send(&self, message: &str) {
        if let Err(e) = self.notify(message) {
            let first = message.lines().next().unwrap_or_default();
            tracing::debug!("sd_notify {first:?} not delivered: {e}");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=…` (shown by `systemctl status`).
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }
}

/// A value of `STATUS=` must stay on one line: a newline would start a new assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The watchdog ping interval: half of `WATCHDOG_USEC`, when the watchdog is meant for the
/// process `my_pid` (`WATCHDOG_PID` absent or equal to it). `None` when there is no watchdog,
/// it is another process's, or the values are malformed or zero.
pub fn watchdog_interval(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    my_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.trim().parse().ok()?;
        if pid != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec) / 2)
}

/// [`watchdog_interval`] for this process, from `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
pub fn watchdog_from_env() -> Option<Duration> {
    watchdog_interval(
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    )
}

/// The `STATUS=` text for an appliance status.
pub fn status_line(status: &Status, serving: &str) -> String {
    if status.detail.is_empty() {
        format!("{}; {serving}", status.state.as_str())
    } else {
        format!("{}: {}; {serving}", status.state.as_str(), status.detail)
    }
}

/// Tells systemd camcast is ready, then keeps it informed until `stop` is cancelled: pings
/// the watchdog every `watchdog` (when `Some`), sends a `STATUS=` line at every appliance
/// state change, and sends `STOPPING=1` once `stop` is cancelled (the task then ends).
/// `serving` describes the listener, e.g. `gRPC on [::]:1234`.
///
/// With a disabled notifier the task ends at once.
pub fn spawn_with(
    notifier: Notifier,
    watchdog: Option<Duration>,
    status: &StatusCell,
    stop: CancellationToken,
    serving: String,
) -> JoinHandle<()> {
    let mut rx = status.subscribe();
    tokio::spawn(async move {
        if !notifier.is_enabled() {
            return;
        }
        notifier.ready(&status_line(&rx.borrow_and_update(), &serving));
        if let Some(every) = watchdog {
            tracing::debug!(?every, "systemd watchdog pings enabled");
        }
        let mut ping = watchdog.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut status_open = true;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = async { ping.as_mut().expect("guarded").tick().await }, if ping.is_some() => {
                    notifier.watchdog();
                }
                changed = rx.changed(), if status_open => match changed {
                    Ok(()) => notifier.status(&status_line(&rx.borrow_and_update(), &serving)),
                    Err(_) => status_open = false,
                },
            }
        }
        notifier.stopping(&format!("stopping; was {serving}"));
    })
}

/// [`spawn_with`] configured from the environment (`$NOTIFY_SOCKET`, `$WATCHDOG_USEC`,
/// `$WATCHDOG_PID`): what `main` calls once the listener is bound.
pub fn spawn(
    status: &StatusCell,
    stop: CancellationToken,
    listen: std::net::SocketAddr,
) -> JoinHandle<()> {
    spawn_with(
        Notifier::from_env(),
        watchdog_from_env(),
        status,
        stop,
        format!("gRPC on {listen}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::State;
    use std::ffi::OsString;

    fn bound_socket(dir: &Path) -> (UnixDatagram, OsString) {
        let path = dir.join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (sock, path.into_os_string())
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a datagram within 5 s");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// Every datagram already queued, without waiting.
    fn drain(sock: &UnixDatagram) -> Vec<String> {
        sock.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        sock.set_nonblocking(false).unwrap();
        got
    }

    #[test]
    fn absent_or_empty_socket_is_a_silent_no_op() {
        for value in [None, Some(OsStr::new(""))] {
            let n = Notifier::from_socket(value);
            assert!(!n.is_enabled());
            n.notify("READY=1").unwrap();
            n.ready("x");
            n.watchdog();
            n.stopping("x");
        }
        assert!(!Notifier::from_socket(Some(OsStr::new("vsock:2:1234"))).is_enabled());
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, path) = bound_socket(dir.path());
        let n = Notifier::from_socket(Some(&path));
        assert!(n.is_enabled());
        n.ready("ready; gRPC on [::]:1234");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=ready; gRPC on [::]:1234");
        n.status("fault: line one\nline two");
        assert_eq!(recv(&sock), "STATUS=fault: line one line two");
        n.watchdog();
        assert_eq!(recv(&sock), "WATCHDOG=1");
        n.stopping("bye");
        assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=bye");
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("camcast-test-notify-{}", std::process::id());
        let sock =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::from_socket(Some(OsStr::new(&format!("@{name}"))));
        n.watchdog();
        assert_eq!(recv(&sock), "WATCHDOG=1");
    }

    #[test]
    fn a_vanished_socket_does_not_fail_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, path) = bound_socket(dir.path());
        let n = Notifier::from_socket(Some(&path));
        drop(sock);
        std::fs::remove_file(&path).unwrap();
        assert!(n.notify("READY=1").is_err());
        n.ready("still fine"); // logged, not returned
    }

    #[test]
    fn watchdog_interval_is_half_and_only_for_us() {
        let os = |s: &str| OsString::from(s);
        let me = 4242;
        assert_eq!(watchdog_interval(None, None, me), None);
        assert_eq!(
            watchdog_interval(Some(&os("30000000")), None, me),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some(&os("30000000")), Some(&os("4242")), me),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some(&os("30000000")), Some(&os("1")), me),
            None,
            "another process's watchdog"
        );
        assert_eq!(watchdog_interval(Some(&os("0")), None, me), None);
        assert_eq!(watchdog_interval(Some(&os("soon")), None, me), None);
        assert_eq!(
            watchdog_interval(Some(&os("30000000")), Some(&os("x")), me),
            None
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn task_reports_ready_status_watchdog_and_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, path) = bound_socket(dir.path());
        let status = StatusCell::new();
        status.set(State::Ready, "");
        let stop = CancellationToken::new();
        let task = spawn_with(
            Notifier::from_socket(Some(&path)),
            Some(Duration::from_millis(50)),
            &status,
            stop.clone(),
            "gRPC on 127.0.0.1:1234".into(),
        );
        let sock = std::sync::Arc::new(sock);
        let next = || {
            let sock = sock.clone();
            async move {
                tokio::task::spawn_blocking(move || recv(&sock))
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            next().await,
            "READY=1\nSTATUS=ready; gRPC on 127.0.0.1:1234"
        );
        // The first tick of a tokio interval is immediate, then every 50 ms.
        for _ in 0..3 {
            assert_eq!(next().await, "WATCHDOG=1");
        }
        status.set(State::Fault, "camera gone");
        let mut got = next().await;
        while got == "WATCHDOG=1" {
            got = next().await;
        }
        assert_eq!(got, "STATUS=fault: camera gone; gRPC on 127.0.0.1:1234");
        stop.cancel();
        task.await.unwrap();
        let rest = drain(&sock);
        assert_eq!(
            rest.last().map(String::as_str),
            Some("STOPPING=1\nSTATUS=stopping; was gRPC on 127.0.0.1:1234"),
            "{rest:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_watchdog_no_pings() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, path) = bound_socket(dir.path());
        let status = StatusCell::new();
        let stop = CancellationToken::new();
        let task = spawn_with(
            Notifier::from_socket(Some(&path)),
            None,
            &status,
            stop.clone(),
            "gRPC on [::]:1234".into(),
        );
        assert_eq!(recv(&sock), "READY=1\nSTATUS=starting; gRPC on [::]:1234");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            drain(&sock),
            Vec::<String>::new(),
            "no WATCHDOG=1 without WATCHDOG_USEC"
        );
        stop.cancel();
        task.await.unwrap();
        assert_eq!(
            recv(&sock),
            "STOPPING=1\nSTATUS=stopping; was gRPC on [::]:1234"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disabled_notifier_task_ends_at_once() {
        let task = spawn_with(
            Notifier::disabled(),
            Some(Duration::from_millis(1)),
            &StatusCell::new(),
            CancellationToken::new(),
            String::new(),
        );
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("ends without being stopped")
            .unwrap();
    }
}
