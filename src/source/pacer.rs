//! Frame pacing against a fixed schedule.
//!
//! Deadlines are `start + k * period`, computed from the frame index rather than by adding a
//! sleep to the previous wake-up, so scheduling jitter never accumulates into rate drift. When
//! the producer falls behind by whole periods it skips those ticks instead of bursting to catch
//! up. The pacer never reads a clock itself: callers pass `now`, which keeps it deterministic
//! under test.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    period: Duration,
    /// Index of the next tick to hand out.
    next_tick: u64,
}

/// The next frame's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Slot number since start (0-based).
    pub index: u64,
    /// When the frame is due.
    pub due: Instant,
    /// Ticks skipped because the producer was late.
    pub missed: u64,
}

impl Pacer {
    /// `fps` must be positive and finite (validated by config).
    pub fn new(fps: f64, start: Instant) -> Self {
        Pacer {
            start,
            period: Duration::from_secs_f64(1.0 / fps),
            next_tick: 0,
        }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// Claims the next slot. If `now` is already past one or more whole future slots, the
    /// latest slot not after `now` is returned (due immediately) and the rest count as missed.
    pub fn next(&mut self, now: Instant) -> Tick {
        let mut tick = self.next_tick;
        let mut missed = 0;
        let elapsed = now.saturating_duration_since(self.start);
        let current = (elapsed.as_nanos() / self.period.as_nanos().max(1)) as u64;
        if current > tick {
            missed = current - tick;
            tick = current;
        }
        self.next_tick = tick + 1;
        Tick {
            index: tick,
            due: self.due_of(tick),
            missed,
        }
    }

    fn due_of(&self, tick: u64) -> Instant {
        // u32 arithmetic on Duration would overflow after ~4e9 frames; go through nanos.
        let nanos = self.period.as_nanos().saturating_mul(u128::from(tick));
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn on_time_producer_gets_consecutive_slots_without_drift() {
        let t0 = Instant::now();
        let mut p = Pacer::new(25.0, t0);
        // Simulate a producer that always wakes 3 ms late: slots stay on the 40 ms grid.
        let mut now = t0;
        for k in 0..1000u64 {
            let tick = p.next(now);
            assert_eq!(tick.missed, 0, "frame {k}");
            assert_eq!(tick.due, t0 + 40 * MS * k as u32);
            now = tick.due + 3 * MS;
        }
    }

    #[test]
    fn late_producer_skips_whole_periods_instead_of_bursting() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10.0, t0);
        assert_eq!(p.next(t0).due, t0);
        // The encoder stalled for 350 ms: slots 1 and 2 are gone, slot 3 is due now.
        let tick = p.next(t0 + 350 * MS);
        assert_eq!(tick.missed, 2);
        assert_eq!(tick.due, t0 + 300 * MS);
        // Back on schedule afterwards.
        let tick = p.next(t0 + 301 * MS);
        assert_eq!(
            tick,
            Tick {
                index: 4,
                due: t0 + 400 * MS,
                missed: 0
            }
        );
    }

    #[test]
    fn early_call_waits_for_its_slot() {
        let t0 = Instant::now();
        let mut p = Pacer::new(30.0, t0);
        p.next(t0);
        let tick = p.next(t0 + MS);
        assert_eq!(tick.missed, 0);
        assert!(tick.due > t0 + 33 * MS && tick.due < t0 + 34 * MS);
    }
}
