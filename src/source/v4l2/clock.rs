//! Capture timestamps. Drivers stamp buffers with CLOCK_MONOTONIC (flagged
//! V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC), which is closer to the moment of exposure than the time
//! we dequeue. Viewers need wall-clock time, so we measure the offset between the two clocks
//! at dequeue time and shift the driver's stamp by it.

use std::time::{Duration, SystemTime};

/// V4L2_BUF_FLAG_TIMESTAMP_MASK and _MONOTONIC.
const TIMESTAMP_MASK: u32 = 0x0000_e000;
const TIMESTAMP_MONOTONIC: u32 = 0x0000_2000;

/// A driver stamp older than this is not believed: no queue is that deep, so the driver's
/// clock must be something else.
const MAX_AGE: Duration = Duration::from_secs(10);

/// Wall-clock capture time of a buffer with driver timestamp `stamp` and buffer `flags`.
pub fn capture_time(stamp: Duration, flags: u32) -> SystemTime {
    let real_now = SystemTime::now();
    if flags & TIMESTAMP_MASK != TIMESTAMP_MONOTONIC {
        return real_now;
    }
    match monotonic_now() {
        Some(mono_now) => wall_from_monotonic(stamp, mono_now, real_now).unwrap_or(real_now),
        None => real_now,
    }
}

/// Converts a CLOCK_MONOTONIC `stamp` to wall-clock time given both clocks' readings now.
/// `None` when the stamp is absent (zero) or implausible (far in the past); a stamp slightly
/// ahead of `mono_now` (read on another CPU) counts as now.
pub fn wall_from_monotonic(
    stamp: Duration,
    mono_now: Duration,
    real_now: SystemTime,
) -> Option<SystemTime> {
    if stamp.is_zero() {
        return None;
    }
    let age = mono_now.saturating_sub(stamp);
    if age > MAX_AGE {
        return None;
    }
    real_now.checked_sub(age)
}

/// The driver's timestamp (`timeval` seconds and microseconds) as a duration; negative parts
/// (never seen from a sane driver) count as zero.
/// Generic because `time_t` is 32 bits on 32-bit ARM and 64 bits elsewhere.
pub fn stamp_duration(sec: impl TryInto<u64>, usec: impl TryInto<u64>) -> Duration {
    let sec: u64 = sec.try_into().unwrap_or(0);
    let usec: u64 = usec.try_into().unwrap_or(0).min(999_999);
    Duration::from_secs(sec) + Duration::from_micros(usec)
}

fn monotonic_now() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_stamp_is_shifted_to_wall_clock() {
        let real_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mono_now = Duration::from_secs(5000);
        let stamp = mono_now - Duration::from_millis(40);
        assert_eq!(
            wall_from_monotonic(stamp, mono_now, real_now),
            Some(real_now - Duration::from_millis(40))
        );
    }

    #[test]
    fn zero_or_implausible_stamps_are_not_used() {
        let real_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mono_now = Duration::from_secs(5000);
        assert_eq!(
            wall_from_monotonic(Duration::ZERO, mono_now, real_now),
            None
        );
        assert_eq!(
            wall_from_monotonic(Duration::from_secs(100), mono_now, real_now),
            None
        );
        // Slightly in the future: another CPU read the clock a hair later.
        assert_eq!(
            wall_from_monotonic(mono_now + Duration::from_micros(5), mono_now, real_now),
            Some(real_now)
        );
    }

    #[test]
    fn capture_time_uses_the_driver_stamp_only_when_monotonic() {
        let mono = monotonic_now().unwrap();
        let stamp = mono.saturating_sub(Duration::from_secs(2));
        let before = SystemTime::now();
        let t = capture_time(stamp, TIMESTAMP_MONOTONIC);
        let lag = before.duration_since(t).expect("stamp is in the past");
        assert!(
            lag > Duration::from_millis(1900) && lag < Duration::from_millis(2100),
            "{lag:?}"
        );
        // Unknown clock (flags 0): the stamp is ignored, the time is now.
        let t = capture_time(stamp, 0);
        assert!(t >= before);
        // No stamp at all.
        assert!(capture_time(Duration::ZERO, TIMESTAMP_MONOTONIC) >= before);
    }

    #[test]
    fn timeval_parts_convert_without_panicking() {
        assert_eq!(stamp_duration(3, 250_000), Duration::from_millis(3250));
        assert_eq!(stamp_duration(-1i64, -1i64), Duration::ZERO);
        assert_eq!(stamp_duration(7i32, 1i32), Duration::from_micros(7_000_001));
        assert_eq!(stamp_duration(0, 5_000_000), Duration::from_micros(999_999));
    }
}
