//! The status LED: shows the appliance [`State`](crate::status::State) as a blink pattern.
//!
//! | State              | LED        | Timing                                                              |
//! |--------------------|------------|---------------------------------------------------------------------|
//! | starting           | steady on  | lit as soon as camcast takes the LED over                           |
//! | waiting for camera | slow blink | 1 s on, 1 s off                                                     |
//! | ready (no viewers) | steady on  | lit                                                                 |
//! | streaming          | heartbeat  | two short pulses a second: 100 ms on, 150 off, 100 on, 650 off      |
//! | fault              | fast blink | 5 Hz: 100 ms on, 100 ms off                                         |
//! | camcast stopped    | off        | a sysfs LED goes back to its kernel trigger (e.g. SD card activity) |
//!
//! Starting is normally over within a fraction of a second and flows into ready without a
//! flicker, so a healthy idle appliance is simply lit. A pattern change shows at once: the new
//! pattern starts from its first step the moment the state changes. A change of detail alone
//! (same state) does not restart the pattern.
//!
//! Choose the LED with `--led`:
//! - `sysfs:ACT` (default): a Linux LED class device under `/sys/class/leds`, here the Pi's
//!   onboard activity LED (`led0` on older kernels). See [`sysfs`].
//! - `gpio:17` or `gpio:17:active-low`: an LED on a BCM GPIO pin, through `rppal`. See [`gpio`].
//! - `none`: no LED.
//!
//! The pieces: the narrow [`Led`] trait with its backends ([`SysfsLed`], [`GpioLed`], [`NoLed`]
//! and the [`RecordingLed`] fake), the state → [`Pattern`] table, and [`drive`], which plays
//! the pattern for the current state on tokio's clock until shutdown.

pub mod gpio;
pub mod pattern;
pub mod sysfs;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::status::{Status, StatusCell};

pub use gpio::GpioLed;
pub use pattern::{Pattern, Step};
pub use sysfs::SysfsLed;

/// A light that can be switched on and off. Backends must be cheap to call: [`drive`] calls
/// `set` from async code, at most a few times a second.
pub trait Led: Send {
    /// Switches the LED on or off.
    fn set(&mut self, on: bool) -> Result<(), LedError>;

    /// Leaves the LED off and restores whatever was changed to drive it (the kernel trigger,
    /// the pin mode). Idempotent; errors are logged, not returned.
    fn release(&mut self);
}

impl<L: Led + ?Sized> Led for Box<L> {
    fn set(&mut self, on: bool) -> Result<(), LedError> {
        (**self).set(on)
    }
    fn release(&mut self) {
        (**self).release()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedError {
    #[error(
        "status LED: no LED named {name:?} in {}; LEDs present: {} \
         (use --led sysfs:NAME with one of them, or --led none)",
        root.display(), list(available)
    )]
    NoSuchLed {
        name: String,
        root: PathBuf,
        available: Vec<String>,
    },
    #[error(
        "status LED: cannot list LEDs in {}: {source} (no LED class on this system? \
         use --led gpio:PIN or --led none)",
        root.display()
    )]
    NoLedClass {
        root: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "status LED: permission denied writing {}; run camcast as root or let its user write \
         the LED's trigger and brightness (e.g. with a udev rule), or use --led none",
        path.display()
    )]
    PermissionDenied { path: PathBuf },
    #[error("status LED: {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("status LED: {} holds {content:?}, expected a number", path.display())]
    Malformed { path: PathBuf, content: String },
    #[error("status LED on GPIO {pin}: {reason}")]
    Gpio { pin: u8, reason: String },
    #[error("status LED: already released")]
    Released,
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Which LED to drive: the `--led` flag (and `led` in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedSpec {
    /// `gpio:PIN[:active-low]`, a BCM GPIO number.
    Gpio { pin: u8, active_low: bool },
    /// `sysfs:NAME`, an LED under `/sys/class/leds`.
    Sysfs { name: String },
    /// `none`.
    None,
}

impl Default for LedSpec {
    /// The Pi's onboard activity LED.
    fn default() -> Self {
        LedSpec::Sysfs { name: "ACT".into() }
    }
}

impl FromStr for LedSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let usage = "expected gpio:PIN[:active-low], sysfs:NAME or none";
        if s == "none" {
            return Ok(LedSpec::None);
        }
        match s.split_once(':') {
            Some(("gpio", rest)) => {
                let (pin, opt) = match rest.split_once(':') {
                    Some((pin, opt)) => (pin, Some(opt)),
                    None => (rest, None),
                };
                let pin = pin.parse::<u8>().map_err(|_| {
                    format!("LED {s:?}: {pin:?} is not a BCM GPIO number (e.g. gpio:17)")
                })?;
                let active_low = match opt {
                    None => false,
                    Some("active-low") => true,
                    Some(other) => {
                        return Err(format!(
                            "LED {s:?}: unknown option {other:?}; the only option is active-low"
                        ))
                    }
                };
                Ok(LedSpec::Gpio { pin, active_low })
            }
            Some(("sysfs", name)) => {
                if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                    return Err(format!(
                        "LED {s:?}: {name:?} is not an LED name as listed in /sys/class/leds \
                         (e.g. sysfs:ACT)"
                    ));
                }
                Ok(LedSpec::Sysfs { name: name.into() })
            }
            _ => Err(format!("unknown LED {s:?}: {usage}")),
        }
    }
}

impl fmt::Display for LedSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedSpec::Gpio { pin, active_low } => {
                write!(f, "gpio:{pin}")?;
                if *active_low {
                    f.write_str(":active-low")?;
                }
                Ok(())
            }
            LedSpec::Sysfs { name } => write!(f, "sysfs:{name}"),
            LedSpec::None => f.write_str("none"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for LedSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl LedSpec {
    /// Opens the LED: takes a sysfs LED over from its trigger, or claims the GPIO pin.
    pub fn open(&self) -> Result<Box<dyn Led>, LedError> {
        Ok(match self {
            LedSpec::Gpio { pin, active_low } => Box::new(GpioLed::open(*pin, *active_low)?),
            LedSpec::Sysfs { name } => Box::new(SysfsLed::open(name)?),
            LedSpec::None => Box::new(NoLed),
        })
    }
}

/// No LED: every call succeeds and nothing happens.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLed;

impl Led for NoLed {
    fn set(&mut self, _on: bool) -> Result<(), LedError> {
        Ok(())
    }
    fn release(&mut self) {}
}

/// A fake LED for tests: records every `set` as `(tokio Instant, on)`. Clones share the
/// recording, so a test keeps one clone and hands the other to [`drive`].
#[derive(Debug, Clone, Default)]
pub struct RecordingLed {
    inner: Arc<Mutex<Recording>>,
}

#[derive(Debug, Default)]
struct Recording {
    sets: Vec<(Instant, bool)>,
    lit: bool,
    released: Option<Instant>,
    failing: bool,
}

impl RecordingLed {
    pub fn new() -> RecordingLed {
        RecordingLed::default()
    }

    /// Every successful `set`, plus the switch-off done by `release` if the LED was lit.
    pub fn transitions(&self) -> Vec<(Instant, bool)> {
        self.inner.lock().unwrap().sets.clone()
    }

    /// [`transitions`](Self::transitions) as milliseconds since `t0`, for readable asserts.
    pub fn timeline_ms(&self, t0: Instant) -> Vec<(u64, bool)> {
        self.transitions()
            .into_iter()
            .map(|(t, on)| (t.duration_since(t0).as_millis() as u64, on))
            .collect()
    }

    pub fn is_on(&self) -> bool {
        self.inner.lock().unwrap().lit
    }

    /// When `release` was first called.
    pub fn released_at(&self) -> Option<Instant> {
        self.inner.lock().unwrap().released
    }

    /// While failing, `set` returns an error and records nothing (a flaky backend).
    pub fn set_failing(&self, failing: bool) {
        self.inner.lock().unwrap().failing = failing;
    }
}

impl Led for RecordingLed {
    fn set(&mut self, on: bool) -> Result<(), LedError> {
        let mut r = self.inner.lock().unwrap();
        if r.failing {
            return Err(LedError::Io {
                path: "(recording fake)".into(),
                source: std::io::Error::other("injected failure"),
            });
        }
        r.sets.push((Instant::now(), on));
        r.lit = on;
        Ok(())
    }

    fn release(&mut self) {
        let mut r = self.inner.lock().unwrap();
        if r.released.is_some() {
            return;
        }
        let now = Instant::now();
        if r.lit {
            r.sets.push((now, false));
            r.lit = false;
        }
        r.released = Some(now);
    }
}

/// Plays the pattern for the current state on `led`, switching pattern the moment the state
/// changes, until `shutdown` is cancelled or every [`StatusCell`] is gone; then releases the
/// LED (off, trigger or pin mode restored).
///
/// Writes only real transitions: a level the LED already shows is not written again. A
/// failing LED is reported once and retried at the next step, so it recovers by itself.
pub async fn drive(
    led: &mut dyn Led,
    mut status: watch::Receiver<Status>,
    shutdown: CancellationToken,
) {
    let mut out = Output {
        led: &mut *led,
        lit: None,
        failing: false,
    };
    loop {
        let state = status.borrow_and_update().state;
        let pattern = Pattern::for_state(state);
        tracing::debug!(
            state = state.as_str(),
            pattern = pattern.name(),
            "status LED pattern"
        );
        let state_changed = tokio::select! {
            biased;
            _ = shutdown.cancelled() => false,
            changed = status.wait_for(|s| s.state != state) => changed.is_ok(),
            never = out.play(pattern) => match never {},
        };
        if !state_changed {
            break;
        }
    }
    led.release();
}

/// Spawns [`drive`] for an opened LED.
pub fn spawn(
    mut led: Box<dyn Led>,
    status: &StatusCell,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let rx = status.subscribe();
    tokio::spawn(async move { drive(led.as_mut(), rx, shutdown).await })
}

/// Opens the LED named by `spec` and spawns [`drive`] for it. An LED that cannot be opened is
/// logged as a warning and the server runs without it (the returned task then ends at once):
/// a status light is never a reason to stop serving video.
pub fn spawn_led(
    spec: &LedSpec,
    status: &StatusCell,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    match spec.open() {
        Ok(led) => {
            if *spec != LedSpec::None {
                tracing::info!(led = %spec, "status LED taken over");
            }
            spawn(led, status, shutdown)
        }
        Err(e) => {
            tracing::warn!(led = %spec, "running without the status LED: {e}");
            tokio::spawn(async {})
        }
    }
}

/// The LED as [`drive`] sees it: the last level written and whether writes are failing.
struct Output<'a> {
    led: &'a mut dyn Led,
    /// `None` until written, and after a failed write (so the next write is not skipped).
    lit: Option<bool>,
    failing: bool,
}

impl Output<'_> {
    fn set(&mut self, on: bool) {
        if self.lit == Some(on) {
            return;
        }
        match self.led.set(on) {
            Ok(()) => {
                self.lit = Some(on);
                if std::mem::take(&mut self.failing) {
                    tracing::info!("status LED working again");
                }
            }
            Err(e) => {
                self.lit = None;
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!("{e}; retrying at each blink, silently");
                }
            }
        }
    }

    /// Plays `pattern` forever, on deadlines computed from its start so steps never drift.
    async fn play(&mut self, pattern: Pattern) -> std::convert::Infallible {
        match pattern {
            Pattern::Steady(on) => {
                self.set(on);
                std::future::pending().await
            }
            Pattern::Cycle(steps) => {
                let mut at = Instant::now();
                loop {
                    for step in steps {
                        self.set(step.on);
                        at += step.dur;
                        sleep_until(at).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::sleep;

    use super::*;
    use crate::status::State;

    /// A driver over a fresh fake LED, started in `state` at the returned instant.
    struct Rig {
        t0: Instant,
        status: StatusCell,
        fake: RecordingLed,
        shutdown: CancellationToken,
        task: JoinHandle<()>,
    }

    impl Rig {
        fn start(state: State) -> Rig {
            let status = StatusCell::new();
            status.set(state, "");
            let fake = RecordingLed::new();
            let shutdown = CancellationToken::new();
            let t0 = Instant::now();
            let task = spawn(Box::new(fake.clone()), &status, shutdown.clone());
            Rig {
                t0,
                status,
                fake,
                shutdown,
                task,
            }
        }

        /// Sleeps until `ms` after the start.
        async fn at(&self, ms: u64) {
            sleep_until(self.t0 + Duration::from_millis(ms)).await;
        }

        /// Shuts the driver down at `ms` and returns the whole timeline.
        async fn stop_at(self, ms: u64) -> Vec<(u64, bool)> {
            self.at(ms).await;
            self.shutdown.cancel();
            self.task.await.unwrap();
            let released = self.fake.released_at().expect("released on shutdown");
            assert_eq!(released, self.t0 + Duration::from_millis(ms));
            assert!(!self.fake.is_on(), "left off");
            self.fake.timeline_ms(self.t0)
        }
    }

    const ON: bool = true;
    const OFF: bool = false;

    #[tokio::test(start_paused = true)]
    async fn starting_is_steady_on() {
        let rig = Rig::start(State::Starting);
        assert_eq!(rig.stop_at(10_000).await, [(0, ON), (10_000, OFF)]);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_camera_blinks_one_second_on_one_off() {
        let rig = Rig::start(State::WaitingForCamera);
        assert_eq!(
            rig.stop_at(4_500).await,
            [
                (0, ON),
                (1_000, OFF),
                (2_000, ON),
                (3_000, OFF),
                (4_000, ON),
                (4_500, OFF), // released
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ready_is_steady_on() {
        let rig = Rig::start(State::Ready);
        assert_eq!(rig.stop_at(60_000).await, [(0, ON), (60_000, OFF)]);
    }

    #[tokio::test(start_paused = true)]
    async fn streaming_is_a_heartbeat_of_two_pulses_a_second() {
        let rig = Rig::start(State::Streaming);
        assert_eq!(
            rig.stop_at(2_200).await,
            [
                (0, ON),
                (100, OFF),
                (250, ON),
                (350, OFF),
                (1_000, ON),
                (1_100, OFF),
                (1_250, ON),
                (1_350, OFF),
                (2_000, ON),
                (2_100, OFF),
                // Already off at shutdown: release writes nothing more.
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fault_blinks_at_five_hertz() {
        let rig = Rig::start(State::Fault);
        let timeline = rig.stop_at(1_050).await;
        let expected: Vec<(u64, bool)> = (0..=10)
            .map(|i| (i * 100, i % 2 == 0))
            .chain([(1_050, OFF)])
            .collect();
        assert_eq!(timeline, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn state_changes_take_effect_mid_pattern() {
        let rig = Rig::start(State::WaitingForCamera);
        // Mid "off" of the slow blink: fault lights the LED at once.
        rig.at(1_500).await;
        rig.status.set(State::Fault, "camera error");
        // Mid "off" of the fast blink: ready lights it and holds.
        rig.at(1_850).await;
        rig.status.set(State::Ready, "idle: no viewers");
        // Already lit: the heartbeat's first pulse continues the light, then beats from here.
        rig.at(3_000).await;
        rig.status.set(State::Streaming, "");
        // Mid pulse: waiting restarts its 1 s "on" from this moment.
        rig.at(3_260).await;
        rig.status.set(State::WaitingForCamera, "camera unplugged");
        assert_eq!(
            rig.stop_at(4_700).await,
            [
                (0, ON),
                (1_000, OFF),
                (1_500, ON), // fault
                (1_600, OFF),
                (1_700, ON),
                (1_800, OFF),
                (1_850, ON),  // ready
                (3_100, OFF), // streaming since 3 000
                (3_250, ON),
                (4_260, OFF), // waiting since 3 260; off at shutdown, so no release write
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn detail_changes_do_not_restart_the_pattern() {
        let rig = Rig::start(State::WaitingForCamera);
        rig.at(500).await;
        rig.status
            .set(State::WaitingForCamera, "still no /dev/video0");
        rig.at(1_500).await;
        rig.status.set(State::WaitingForCamera, "still nothing");
        assert_eq!(
            rig.stop_at(2_500).await,
            [(0, ON), (1_000, OFF), (2_000, ON), (2_500, OFF)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_led_is_retried_and_recovers() {
        let rig = Rig::start(State::WaitingForCamera);
        rig.at(500).await;
        rig.fake.set_failing(true);
        rig.at(1_500).await;
        rig.fake.set_failing(false);
        assert_eq!(
            rig.stop_at(3_500).await,
            [(0, ON), (2_000, ON), (3_000, OFF)],
            "the 'off' at 1 000 failed, so the 'on' at 2 000 is written, not skipped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_every_status_cell_ends_the_driver_and_releases() {
        let Rig {
            t0,
            status,
            fake,
            shutdown: _shutdown,
            task,
        } = Rig::start(State::Ready);
        sleep(Duration::from_millis(300)).await;
        drop(status);
        task.await.unwrap();
        assert_eq!(fake.timeline_ms(t0), [(0, ON), (300, OFF)]);
        assert!(fake.released_at().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn unopenable_led_leaves_the_server_running_without_it() {
        let status = StatusCell::new();
        let spec = LedSpec::Gpio {
            pin: 200,
            active_low: false,
        };
        // Off a Pi this fails at Gpio::new; on a Pi at the pin number. Either way: no panic,
        // and the task ends at once.
        let task = spawn_led(&spec, &status, CancellationToken::new());
        task.await.unwrap();
    }
}
