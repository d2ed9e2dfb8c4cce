//! Blink patterns: what the LED shows for each appliance [`State`].
//!
//! A pattern is either a steady level or a cycle of timed steps that repeats from its first
//! step. Every cycle alternates levels and starts lit, so each step is one visible transition
//! and a pattern change shows at once (see the table in [`crate::led`]).

use std::time::Duration;

use crate::status::State;

/// One timed step of a blinking pattern: the LED is `on` (or off) for `dur`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub on: bool,
    pub dur: Duration,
}

const fn step(on: bool, ms: u64) -> Step {
    Step {
        on,
        dur: Duration::from_millis(ms),
    }
}

/// What the LED does while the appliance is in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// One level, held until the state changes.
    Steady(bool),
    /// Steps played in order, repeating from the first, until the state changes.
    Cycle(&'static [Step]),
}

/// 1 s on, 1 s off.
pub const SLOW_BLINK: &[Step] = &[step(true, 1000), step(false, 1000)];
/// Two short pulses a second: 100 ms on, 150 ms off, 100 ms on, 650 ms off.
pub const HEARTBEAT: &[Step] = &[
    step(true, 100),
    step(false, 150),
    step(true, 100),
    step(false, 650),
];
/// 5 Hz: 100 ms on, 100 ms off.
pub const FAST_BLINK: &[Step] = &[step(true, 100), step(false, 100)];

impl Pattern {
    /// The pattern shown for `state`.
    pub fn for_state(state: State) -> Pattern {
        match state {
            State::Starting => Pattern::Steady(true),
            State::WaitingForCamera => Pattern::Cycle(SLOW_BLINK),
            State::Ready => Pattern::Steady(true),
            State::Streaming => Pattern::Cycle(HEARTBEAT),
            State::Fault => Pattern::Cycle(FAST_BLINK),
        }
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Steady(true) => "steady on",
            Pattern::Steady(false) => "off",
            Pattern::Cycle(s) if s == SLOW_BLINK => "slow blink",
            Pattern::Cycle(s) if s == HEARTBEAT => "heartbeat",
            Pattern::Cycle(s) if s == FAST_BLINK => "fast blink",
            Pattern::Cycle(_) => "custom",
        }
    }

    /// How long one cycle takes (`None` for a steady level).
    pub fn period(self) -> Option<Duration> {
        match self {
            Pattern::Steady(_) => None,
            Pattern::Cycle(steps) => Some(steps.iter().map(|s| s.dur).sum()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [State; 5] = [
        State::Starting,
        State::WaitingForCamera,
        State::Ready,
        State::Streaming,
        State::Fault,
    ];

    #[test]
    fn cycles_alternate_start_lit_and_wrap_with_a_transition() {
        for state in ALL {
            let Pattern::Cycle(steps) = Pattern::for_state(state) else {
                continue;
            };
            assert!(steps.len() >= 2 && steps.len() % 2 == 0, "{state:?}");
            assert!(steps[0].on, "{state:?} starts lit");
            for (i, s) in steps.iter().enumerate() {
                let next = steps[(i + 1) % steps.len()];
                assert_ne!(s.on, next.on, "{state:?}: step {i} is not a transition");
                assert!(!s.dur.is_zero(), "{state:?}: step {i} has no duration");
            }
        }
    }

    #[test]
    fn periods_match_the_documented_rates() {
        let ms = |s| Pattern::for_state(s).period().map(|d| d.as_millis());
        assert_eq!(ms(State::Starting), None);
        assert_eq!(ms(State::Ready), None);
        assert_eq!(ms(State::WaitingForCamera), Some(2000), "0.5 Hz");
        assert_eq!(ms(State::Streaming), Some(1000), "two pulses a second");
        assert_eq!(ms(State::Fault), Some(200), "5 Hz");
    }

    #[test]
    fn every_state_has_a_named_pattern() {
        let names: Vec<_> = ALL.map(|s| Pattern::for_state(s).name()).to_vec();
        assert_eq!(
            names,
            [
                "steady on",
                "slow blink",
                "steady on",
                "heartbeat",
                "fast blink"
            ]
        );
    }
}
