//! Exponential backoff between reconnection attempts, and the outage messages that go with it
//! (said once when the link drops, and once when it is back, not at every retry).

use std::time::{Duration, Instant};

/// Delays that double from `initial` up to `max`, back to `initial` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The viewer's delays: 0.5 s, 1 s, 2 s, 4 s, then 8 s.
    pub fn viewer() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(8))
    }

    /// The delay before the next attempt; the one after it is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// After a success: the next outage starts again from `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Tracks one outage so that it is reported once, and its length when it ends.
#[derive(Debug, Default)]
pub struct Outage {
    since: Option<Instant>,
}

impl Outage {
    /// The link failed. Returns true the first time for this outage (when to say so).
    pub fn failed(&mut self, now: Instant) -> bool {
        if self.since.is_some() {
            return false;
        }
        self.since = Some(now);
        true
    }

    /// Frames flow again. Returns how long the outage lasted, if there was one.
    pub fn recovered(&mut self, now: Instant) -> Option<Duration> {
        self.since.take().map(|s| now.saturating_duration_since(s))
    }

    pub fn is_down(&self) -> bool {
        self.since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::viewer();
        let ms: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[test]
    fn an_outage_is_reported_once_and_timed() {
        let t0 = Instant::now();
        let mut o = Outage::default();
        assert_eq!(o.recovered(t0), None, "no outage yet");
        assert!(o.failed(t0));
        assert!(!o.failed(t0 + Duration::from_secs(1)), "same outage");
        assert!(o.is_down());
        assert_eq!(
            o.recovered(t0 + Duration::from_secs(3)),
            Some(Duration::from_secs(3))
        );
        assert!(!o.is_down());
        assert!(o.failed(t0 + Duration::from_secs(4)), "a new outage");
    }
}
