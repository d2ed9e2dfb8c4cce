//! Capture timestamps, one rule for every source. Drivers stamp a frame on a kernel clock
//! closer to the moment of exposure than the time we dequeue it: V4L2 on CLOCK_MONOTONIC (when
//! the buffer is flagged so), libcamera on CLOCK_BOOTTIME (some pipelines use CLOCK_MONOTONIC,
//! the same clock on a machine that never suspends). Viewers need wall-clock time, so the
//! stamp's age on its clock, measured now, is subtracted from the wall clock read at the same
//! moment.
//!
//! A stamp is believed when it is non-zero, at most [`MAX_AGE`] old and at most [`MAX_AHEAD`]
//! ahead of its clock. Otherwise the next candidate clock is tried, and with none left the
//! frame is stamped with the time now.
//!
//! Future-dated stamps are rejected, not clamped to "now". A stamp taken before we read the
//! clock can be ahead of it only by the skew between CPUs' reads; one further ahead was not
//! taken on that clock. Clamping would accept it as "age 0" and stop the search on the wrong
//! clock (for libcamera, before trying the one the stamp is really on), and it hides a driver
//! bug behind a plausible value. Rejecting it costs nothing when no clock fits: the frame gets
//! "now", exactly what clamping would give. Either way no frame is ever dated in the future.

use std::time::{Duration, SystemTime};

/// A stamp older than this is not believed: no capture queue is that deep, so the stamp is
/// on some other clock.
pub const MAX_AGE: Duration = Duration::from_secs(10);
/// A stamp this far ahead of its clock's reading still counts as "now" (another CPU read it).
pub const MAX_AHEAD: Duration = Duration::from_millis(5);

/// The kernel clocks drivers stamp frames with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelClock {
    Monotonic,
    /// Monotonic, plus the time spent suspended.
    Boottime,
}

impl KernelClock {
    /// The clock's reading now.
    pub fn now(self) -> Option<Duration> {
        let id = match self {
            KernelClock::Monotonic => libc::CLOCK_MONOTONIC,
            KernelClock::Boottime => libc::CLOCK_BOOTTIME,
        };
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
            return None;
        }
        Some(Duration::new(
            u64::try_from(ts.tv_sec).ok()?,
            u32::try_from(ts.tv_nsec).ok()?,
        ))
    }
}

/// Wall-clock time of a frame stamped `stamp` on one of `clocks` (tried in order); the time
/// now when there is no stamp or it fits none of them.
pub fn wall_time(stamp: Option<Duration>, clocks: &[KernelClock]) -> SystemTime {
    let wall_now = SystemTime::now();
    match stamp {
        Some(stamp) => first_fit(stamp, clocks.iter().filter_map(|c| c.now()), wall_now),
        None => wall_now,
    }
}

/// The rule behind [`wall_time`], given the candidate clocks' readings (in order) taken with
/// `wall_now`.
fn first_fit(
    stamp: Duration,
    mut readings: impl Iterator<Item = Duration>,
    wall_now: SystemTime,
) -> SystemTime {
    readings
        .find_map(|clock_now| shift(stamp, clock_now, wall_now))
        .unwrap_or(wall_now)
}

/// `stamp`, on a clock that reads `clock_now` at the moment the wall clock reads `wall_now`,
/// as wall-clock time; `None` when the stamp is absent (zero) or implausible for that clock.
pub fn shift(stamp: Duration, clock_now: Duration, wall_now: SystemTime) -> Option<SystemTime> {
    if stamp.is_zero() || stamp > clock_now + MAX_AHEAD {
        return None;
    }
    let age = clock_now.saturating_sub(stamp);
    if age > MAX_AGE {
        return None;
    }
    wall_now.checked_sub(age)
}

/// A `timeval` (seconds, microseconds) as a duration; negative parts (never seen from a sane
/// driver) count as zero. Generic because `time_t` is 32 bits on 32-bit ARM.
pub fn from_timeval(sec: impl TryInto<u64>, usec: impl TryInto<u64>) -> Duration {
    let sec: u64 = sec.try_into().unwrap_or(0);
    let usec: u64 = usec.try_into().unwrap_or(0).min(999_999);
    Duration::from_secs(sec) + Duration::from_micros(usec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALL: Duration = Duration::from_secs(1_700_000_000);

    #[test]
    fn stamps_shift_by_their_age() {
        let wall = SystemTime::UNIX_EPOCH + WALL;
        let now = Duration::from_secs(5000);
        let ms = Duration::from_millis;
        assert_eq!(shift(now - ms(40), now, wall), Some(wall - ms(40)));
        assert_eq!(shift(now - MAX_AGE, now, wall), Some(wall - MAX_AGE));
        assert_eq!(shift(now, now, wall), Some(wall));
    }

    #[test]
    fn absent_old_or_future_stamps_are_not_believed() {
        let wall = SystemTime::UNIX_EPOCH + WALL;
        let now = Duration::from_secs(5000);
        assert_eq!(shift(Duration::ZERO, now, wall), None);
        assert_eq!(
            shift(now - MAX_AGE - Duration::from_nanos(1), now, wall),
            None
        );
        // A hair ahead (another CPU read the clock a little later): now.
        assert_eq!(shift(now + Duration::from_micros(5), now, wall), Some(wall));
        assert_eq!(shift(now + MAX_AHEAD, now, wall), Some(wall));
        // Further ahead: not a stamp from this clock.
        assert_eq!(
            shift(now + MAX_AHEAD + Duration::from_nanos(1), now, wall),
            None
        );
        assert_eq!(shift(now + Duration::from_secs(1), now, wall), None);
    }

    #[test]
    fn the_first_clock_the_stamp_fits_is_used_else_now() {
        let wall = SystemTime::UNIX_EPOCH + WALL;
        let secs = Duration::from_secs_f64;
        let stamp = secs(4999.5);
        // Boottime 30 s ahead of monotonic (the machine was suspended): the monotonic stamp
        // is too old for boottime, and fits monotonic.
        let readings = [secs(5030.0), secs(5000.0)];
        assert_eq!(
            first_fit(stamp, readings.into_iter(), wall),
            wall - secs(0.5)
        );
        // A first clock the stamp is far ahead of is passed over too (clamping would have
        // stopped there with "now").
        let readings = [secs(100.0), secs(5000.0)];
        assert_eq!(
            first_fit(stamp, readings.into_iter(), wall),
            wall - secs(0.5)
        );
        // Fits none, or no clock to try: now.
        assert_eq!(first_fit(stamp, [secs(100.0)].into_iter(), wall), wall);
        assert_eq!(first_fit(stamp, std::iter::empty(), wall), wall);
    }

    #[test]
    fn a_real_stamp_maps_to_its_age_before_now() {
        let age = Duration::from_millis(2000);
        for clock in [KernelClock::Monotonic, KernelClock::Boottime] {
            // Bracketed by wall-clock readings: the stamp's age grows while the call runs, by
            // at most the bracket's width.
            let before = SystemTime::now();
            let stamp = clock.now().unwrap() - age;
            let t = wall_time(Some(stamp), &[clock]);
            let after = SystemTime::now();
            let spread = after.duration_since(before).unwrap();
            assert!(t <= after - age && t >= before - age - spread, "{clock:?}");
            // A minute ahead of the clock: not believed, so now.
            let t = wall_time(
                Some(clock.now().unwrap() + Duration::from_secs(60)),
                &[clock],
            );
            assert!(t >= after && t <= SystemTime::now(), "{clock:?}");
        }
        let before = SystemTime::now();
        assert!(wall_time(None, &[KernelClock::Monotonic]) >= before);
    }

    #[test]
    fn timeval_parts_convert_without_panicking() {
        assert_eq!(from_timeval(3, 250_000), Duration::from_millis(3250));
        assert_eq!(from_timeval(-1i64, -1i64), Duration::ZERO);
        assert_eq!(from_timeval(7i32, 1i32), Duration::from_micros(7_000_001));
        assert_eq!(from_timeval(0, 5_000_000), Duration::from_micros(999_999));
    }
}
