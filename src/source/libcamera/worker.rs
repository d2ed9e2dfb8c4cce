//! The thread that owns every libcamera object of one running source, and the messages it
//! hears: completed requests and disconnects from libcamera's thread, frame requests and the
//! stop order from the capture thread.

use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use ::libcamera::request::Request;

use super::manager::{lock_manager, start_manager};
use super::session::Session;
use super::LibcameraConfig;
use crate::frame::CapturedFrame;
use crate::source::{Mode, SourceError};

/// The source's handle on its worker thread.
pub(super) struct Worker {
    pub(super) tx: Sender<Msg>,
    pub(super) thread: JoinHandle<Result<(), SourceError>>,
}

impl Worker {
    /// Waits for a worker that has ended (or is ending) on its own and says why.
    pub(super) fn join_reason(self) -> SourceError {
        drop(self.tx);
        match self.thread.join() {
            Ok(Err(e)) => e,
            Ok(Ok(())) => SourceError::Failed("the libcamera thread ended unexpectedly".into()),
            Err(panic) => SourceError::Failed(format!(
                "the libcamera thread panicked: {}",
                panic_text(panic.as_ref())
            )),
        }
    }
}

/// Everything the worker thread hears, on one channel.
pub(super) enum Msg {
    /// A request libcamera has finished with (sent from libcamera's thread).
    Completed(Request),
    /// libcamera reports that the camera went away (sent from libcamera's thread).
    Disconnected,
    /// The capture thread wants the next frame, answered on this channel.
    Want(SyncSender<Result<CapturedFrame, SourceError>>),
    /// Release everything and end.
    Stop,
}

pub(super) type Ready = SyncSender<Result<Mode, SourceError>>;

/// The worker thread's body. Panics from libcamera-rs (it unwraps in places) end the thread and
/// reach the source through `JoinHandle::join`; the camera objects are dropped while unwinding.
pub(super) fn run(
    cfg: &LibcameraConfig,
    rx: &Receiver<Msg>,
    callback_tx: Sender<Msg>,
    ready: Ready,
) -> Result<(), SourceError> {
    // Declared before the manager, so released after it.
    let _guard = match lock_manager() {
        Ok(g) => g,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let manager = match start_manager() {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let mut session = match Session::open(&manager, cfg, callback_tx) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    if let Err(e) = session.queue_idle() {
        session.close(rx);
        let _ = ready.send(Err(e));
        return Ok(());
    }
    let outcome = if ready.send(Ok(session.mode().clone())).is_ok() {
        session.serve(rx)
    } else {
        Ok(()) // start() gave up waiting and has gone
    };
    session.close(rx);
    // `manager` drops here, after every camera object (the borrow in `Session` ensures it).
    outcome
}

pub(super) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
