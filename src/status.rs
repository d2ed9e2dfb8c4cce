//! The appliance state, published once and read by the LED, the health service, the info call
//! and the logs.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    /// The configured camera is absent; the source retries with backoff.
    WaitingForCamera,
    /// Camera available, nobody watching, capture idle.
    Ready,
    /// Capturing for at least one viewer.
    Streaming,
    /// The source failed in a way other than disappearing; it retries with backoff.
    Fault,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::WaitingForCamera => "waiting for camera",
            State::Ready => "ready",
            State::Streaming => "streaming",
            State::Fault => "fault",
        }
    }

    /// Whether the camera can serve viewers: not while it is missing or faulty. Health checks
    /// report this.
    pub fn is_serving(self) -> bool {
        !matches!(self, State::WaitingForCamera | State::Fault)
    }
}

/// State plus a human-readable detail (e.g. the last error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    pub detail: String,
}

/// Cloneable handle to the single published status. Setting it logs transitions.
#[derive(Clone)]
pub struct StatusCell {
    tx: Arc<watch::Sender<Status>>,
}

impl Default for StatusCell {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusCell {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(Status {
            state: State::Starting,
            detail: String::new(),
        });
        StatusCell { tx: Arc::new(tx) }
    }

    pub fn get(&self) -> Status {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.tx.subscribe()
    }

    /// Publishes a new status; unchanged values wake nobody and log nothing.
    pub fn set(&self, state: State, detail: impl Into<String>) {
        let next = Status {
            state,
            detail: detail.into(),
        };
        self.tx.send_if_modified(|cur| {
            if *cur == next {
                return false;
            }
            if cur.state != next.state {
                tracing::info!(from = cur.state.as_str(), to = next.state.as_str(), detail = %next.detail, "state changed");
            }
            *cur = next;
            true
        });
    }
}
