//! Fault injection: a source wrapper that, at random with set rates and a seed, fails, stalls
//! or corrupts frames, so the hub's recovery, health and LED can be exercised on any machine.
//!
//! `--source chaos:test-pattern --chaos "error=0.01,stall=0.002,corrupt=0.02,seed=7"`. Each
//! `next_frame` call draws one fault (or none) with the given probabilities:
//! - `error`: `Failed` or `Unavailable`, half each, as a camera fault or an unplug would be.
//! - `stall`: no frame for the V4L2 source's [`FRAME_TIMEOUT`] (the only no-frame timeout in
//!   camcast; the hub has none), then `Unavailable`, exactly what a stalled camera returns.
//! - `corrupt`: the wrapped frame truncated to half (no EOI) or replaced by garbage of the same
//!   length (no SOI). The hub's shape check must drop it. Corruption *inside* the entropy data
//!   with SOI and EOI intact is not injected: nothing in camcast decodes frames, so only a full
//!   decode could catch it (camera JPEGs get the marker walk of `jpeg::inspect` in the V4L2
//!   source; frames camcast encodes itself cannot be corrupt that way).

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use super::v4l2::FRAME_TIMEOUT;
use super::{FrameSource, Mode, SourceError};
use crate::frame::CapturedFrame;

/// Fault rates (probabilities per frame) and the seed that makes a run reproducible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChaosConfig {
    pub error: f64,
    pub stall: f64,
    pub corrupt: f64,
    /// `None`: one is drawn at start and logged, so a run can be repeated with `seed=N`.
    pub seed: Option<u64>,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            error: 0.01,
            stall: 0.002,
            corrupt: 0.02,
            seed: None,
        }
    }
}

impl FromStr for ChaosConfig {
    type Err = String;

    /// `error=P,stall=P,corrupt=P,seed=N`, every key optional (defaults as in [`Default`]).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut cfg = ChaosConfig::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("chaos setting {item:?} is not KEY=VALUE"))?;
            let (key, value) = (key.trim(), value.trim());
            if key == "seed" {
                let seed = value
                    .parse()
                    .map_err(|_| format!("chaos seed {value:?} is not a whole number"))?;
                cfg.seed = Some(seed);
                continue;
            }
            let rate = parse_rate(key, value)?;
            match key {
                "error" => cfg.error = rate,
                "stall" => cfg.stall = rate,
                "corrupt" => cfg.corrupt = rate,
                _ => {
                    return Err(format!(
                        "unknown chaos setting {key:?}: expected error, stall, corrupt or seed"
                    ))
                }
            }
        }
        let total = cfg.error + cfg.stall + cfg.corrupt;
        if total > 1.0 {
            return Err(format!("chaos rates add up to {total}, more than 1"));
        }
        Ok(cfg)
    }
}

fn parse_rate(key: &str, value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "chaos {key} rate {value:?} must be a probability from 0 to 1"
        )),
    }
}

impl fmt::Display for ChaosConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "error={},stall={},corrupt={}",
            self.error, self.stall, self.corrupt
        )?;
        match self.seed {
            Some(seed) => write!(f, ",seed={seed}"),
            None => Ok(()),
        }
    }
}

impl TryFrom<String> for ChaosConfig {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl<'de> serde::Deserialize<'de> for ChaosConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What one `next_frame` call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Failed,
    Unavailable,
    Stall,
    Truncate,
    Garbage,
}

/// Where faults come from: seeded chance, or a fixed plan (tests), then no faults.
enum Faults {
    Random {
        cfg: ChaosConfig,
        rng: fastrand::Rng,
    },
    Plan(VecDeque<Fault>),
}

impl Faults {
    fn next(&mut self) -> Fault {
        match self {
            Faults::Plan(plan) => plan.pop_front().unwrap_or(Fault::None),
            Faults::Random { cfg, rng } => {
                let x = rng.f64();
                let coin = rng.bool();
                if x < cfg.error {
                    if coin {
                        Fault::Failed
                    } else {
                        Fault::Unavailable
                    }
                } else if x < cfg.error + cfg.stall {
                    Fault::Stall
                } else if x < cfg.error + cfg.stall + cfg.corrupt {
                    if coin {
                        Fault::Truncate
                    } else {
                        Fault::Garbage
                    }
                } else {
                    Fault::None
                }
            }
        }
    }
}

/// Wraps `inner`, injecting faults into `next_frame`; `start` and `stop` pass through.
pub struct ChaosSource {
    inner: Box<dyn FrameSource>,
    faults: Faults,
    garbage: fastrand::Rng,
}

impl ChaosSource {
    /// Random faults at `cfg`'s rates. The seed (drawn if not given) is logged.
    pub fn new(inner: Box<dyn FrameSource>, cfg: ChaosConfig) -> Self {
        let seed = cfg.seed.unwrap_or_else(|| fastrand::u64(..));
        tracing::warn!(source = %inner.name(), chaos = %ChaosConfig { seed: Some(seed), ..cfg },
            "fault injection on: this source fails on purpose");
        ChaosSource {
            inner,
            faults: Faults::Random {
                cfg,
                rng: fastrand::Rng::with_seed(seed),
            },
            garbage: fastrand::Rng::with_seed(seed ^ 0x9E37_79B9_7F4A_7C15),
        }
    }

    /// Faults in the order given, then none: for deterministic tests.
    pub fn planned(inner: Box<dyn FrameSource>, plan: impl IntoIterator<Item = Fault>) -> Self {
        ChaosSource {
            inner,
            faults: Faults::Plan(plan.into_iter().collect()),
            garbage: fastrand::Rng::with_seed(1),
        }
    }

    fn corrupt(&mut self, mut frame: CapturedFrame, fault: Fault) -> CapturedFrame {
        let len = frame.jpeg.len();
        frame.jpeg = match fault {
            Fault::Truncate => frame.jpeg.slice(..len / 2),
            _ => {
                let mut junk: Vec<u8> = std::iter::repeat_with(|| self.garbage.u8(..))
                    .take(len)
                    .collect();
                // Never an SOI: garbage must not look like a JPEG by chance.
                if let Some(first) = junk.first_mut() {
                    *first = 0;
                }
                Bytes::from(junk)
            }
        };
        frame
    }
}

impl FrameSource for ChaosSource {
    fn name(&self) -> String {
        format!("chaos:{}", self.inner.name())
    }

    fn start(&mut self) -> Result<Mode, SourceError> {
        self.inner.start()
    }

    fn next_frame(&mut self) -> Result<CapturedFrame, SourceError> {
        let fault = self.faults.next();
        match fault {
            Fault::None => self.inner.next_frame(),
            Fault::Failed => Err(SourceError::Failed("chaos: injected failure".into())),
            Fault::Unavailable => Err(SourceError::Unavailable("chaos: injected unplug".into())),
            Fault::Stall => {
                std::thread::sleep(FRAME_TIMEOUT);
                Err(SourceError::Unavailable(format!(
                    "chaos: injected stall, no frame for {FRAME_TIMEOUT:?}"
                )))
            }
            Fault::Truncate | Fault::Garbage => {
                let frame = self.inner.next_frame()?;
                Ok(self.corrupt(frame, fault))
            }
        }
    }

    fn stop(&mut self) {
        self.inner.stop()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::frame::looks_like_jpeg;
    use crate::source::fake::FakeSource;

    fn fake() -> Box<dyn FrameSource> {
        Box::new(FakeSource::new(32, 16, Duration::ZERO).0)
    }

    #[test]
    fn settings_parse_with_defaults_and_reject_nonsense() {
        let c: ChaosConfig = "error=0.1, corrupt=0.5,seed=7".parse().unwrap();
        assert_eq!(
            c,
            ChaosConfig {
                error: 0.1,
                stall: 0.002,
                corrupt: 0.5,
                seed: Some(7)
            }
        );
        assert_eq!("".parse::<ChaosConfig>(), Ok(ChaosConfig::default()));
        assert_eq!(c.to_string().parse::<ChaosConfig>(), Ok(c));
        for bad in [
            "error=2",
            "error=-0.1",
            "error=NaN",
            "stall",
            "boom=0.1",
            "seed=x",
            "error=0.6,corrupt=0.6",
        ] {
            assert!(bad.parse::<ChaosConfig>().is_err(), "{bad} accepted");
        }
        let err = "boom=0.1".parse::<ChaosConfig>().unwrap_err();
        assert!(
            err.contains("expected error, stall, corrupt or seed"),
            "{err}"
        );
    }

    /// Draws `n` faults from a random plan with `spec`'s settings.
    fn draws(spec: &str, n: usize) -> Vec<Fault> {
        let mut faults = match ChaosSource::new(fake(), spec.parse().unwrap()).faults {
            f @ Faults::Random { .. } => f,
            Faults::Plan(_) => unreachable!(),
        };
        (0..n).map(|_| faults.next()).collect()
    }

    #[test]
    fn same_seed_same_faults_and_rates_are_honoured() {
        let spec = "error=0.1,stall=0.05,corrupt=0.2,seed=42";
        let a = draws(spec, 20_000);
        assert_eq!(a, draws(spec, 20_000), "a seed reproduces the run");
        assert_ne!(a, draws("error=0.1,stall=0.05,corrupt=0.2,seed=43", 20_000));
        let share =
            |f: &[Fault]| a.iter().filter(|x| f.contains(x)).count() as f64 / a.len() as f64;
        // 20 000 draws: each share is within a few standard deviations (< 0.003) of its rate.
        assert!((share(&[Fault::Failed, Fault::Unavailable]) - 0.1).abs() < 0.015);
        assert!((share(&[Fault::Stall]) - 0.05).abs() < 0.015);
        assert!((share(&[Fault::Truncate, Fault::Garbage]) - 0.2).abs() < 0.015);
        assert!(draws("error=0,stall=0,corrupt=0,seed=1", 1000)
            .iter()
            .all(|f| *f == Fault::None));
    }

    #[test]
    fn corrupt_frames_fail_the_hubs_shape_check_and_errors_are_typed() {
        let mut src = ChaosSource::planned(
            fake(),
            [
                Fault::Truncate,
                Fault::Garbage,
                Fault::Failed,
                Fault::Unavailable,
            ],
        );
        assert_eq!(src.name(), "chaos:fake");
        src.start().unwrap();
        let truncated = src.next_frame().unwrap();
        let garbage = src.next_frame().unwrap();
        assert!(!truncated.jpeg.is_empty() && !looks_like_jpeg(&truncated.jpeg));
        assert!(!garbage.jpeg.is_empty() && !looks_like_jpeg(&garbage.jpeg));
        assert!(matches!(src.next_frame(), Err(SourceError::Failed(_))));
        assert!(matches!(src.next_frame(), Err(SourceError::Unavailable(_))));
        assert!(
            looks_like_jpeg(&src.next_frame().unwrap().jpeg),
            "plan over"
        );
        src.stop();
    }
}
