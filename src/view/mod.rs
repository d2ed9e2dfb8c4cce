//! camcast-view: its window mode, recording, and the choice among cameras found on the LAN.
//! Built only with the `viewer` feature: the server binary carries none of it.
//!
//! Threads: the window runs on the main thread (X11 wants one thread for its calls); the
//! network side ([`feed`]) runs on a tokio runtime's worker threads. They meet in a "latest
//! only" slot, a `tokio::sync::watch` cell holding the newest frame: the window decodes only
//! the frame that is current when it gets to it, never a backlog. Keys come back to the network
//! side as [`feed::Command`]s, because recording happens there, on every received frame.
//!
//! - [`feed`]: connect, stream, reconnect with backoff, record, publish.
//! - [`reconnect`]: the backoff and the once-per-outage reporting.
//! - [`window`]: the minifb window: drawing, title, keys.
//! - [`picture`]: JPEG → window pixels, window sizing.
//! - [`record`]: Matroska (V_MJPEG) writer.
//! - [`choose`]: no address given: which of the cameras found on the LAN to watch, `--list`'s
//!   table, and the exit status when there is none.

pub mod choose;
pub mod feed;
pub mod picture;
pub mod reconnect;
pub mod record;
pub mod window;

use std::path::PathBuf;
use std::time::SystemTime;

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (as sent by `timeout` or `kill`): both stop the
/// viewer cleanly, finishing any recording.
pub async fn quit_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// An automatic file name in the current directory: `camcast-2026-11-25T004512Z{suffix}`.
/// UTC, without colons, so it is a valid name everywhere and sorts by time.
pub fn auto_name(at: SystemTime, suffix: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace(':', "");
    PathBuf::from(format!("camcast-{stamp}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn auto_names_carry_utc_time_without_colons() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_031_512);
        assert_eq!(
            auto_name(t, "-seq42.jpg"),
            PathBuf::from("camcast-2025-11-25T004512Z-seq42.jpg")
        );
    }
}
