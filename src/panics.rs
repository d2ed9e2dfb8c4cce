//! Panics are bugs, and they must be seen. The hook logs each one once, with where it happened,
//! and counts it; GetInfo and `/info.json` report the count, and the tests and CI stages fail on
//! any panic in the server's output or a non-zero count.
//!
//! The release build unwinds (see Cargo.toml): a panic in one viewer's task ends that viewer
//! only, so without this count a bug could hide behind a server that keeps serving.

use std::sync::atomic::{AtomicU64, Ordering};

static PANICS: AtomicU64 = AtomicU64::new(0);

/// The words every panic's log line starts with: what tests and CI search the output for.
pub const LOG_MARK: &str = "PANIC (a bug in camcast)";

/// Panics since the process started.
pub fn count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// Replaces the default hook (which prints to stderr, bypassing the log) with one that counts
/// the panic and logs it once through `tracing`, with thread, location and, when
/// `RUST_BACKTRACE` asks for it, the backtrace. Call once, after logging is set up.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let total = PANICS.fetch_add(1, Ordering::Relaxed) + 1;
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let location = info
            .location()
            .map_or_else(|| "unknown".to_string(), ToString::to_string);
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
            _ => String::new(),
        };
        tracing::error!(thread, %location, panics_total = total, "{LOG_MARK}: {message}{backtrace}");
    }));
}
