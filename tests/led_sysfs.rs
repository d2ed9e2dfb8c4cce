//! The status LED backends against a temporary directory laid out like /sys/class/leds, the
//! `--led` flag, and the GPIO backend's error off a Raspberry Pi.

use std::fs;
use std::path::Path;
use std::time::Duration;

use camcast::led::{self, GpioLed, Led, LedError, LedSpec, SysfsLed};
use camcast::status::{State, StatusCell};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const PI_TRIGGERS: &str = "none rc-feedback kbd-scrolllock [mmc0] timer heartbeat\n";

/// A fake LED class directory: `ACT` (SD activity trigger, max 255), `PWR`, `mmc0::`.
fn fake_leds() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for (name, trigger, max, now) in [
        ("ACT", PI_TRIGGERS, "255\n", "0\n"),
        ("PWR", "none [default-on] timer\n", "1\n", "1\n"),
        ("mmc0::", "none [mmc0] timer\n", "255\n", "0\n"),
    ] {
        let dir = root.path().join(name);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("trigger"), trigger).unwrap();
        fs::write(dir.join("max_brightness"), max).unwrap();
        fs::write(dir.join("brightness"), now).unwrap();
    }
    root
}

fn read(root: &Path, led: &str, attr: &str) -> String {
    fs::read_to_string(root.join(led).join(attr)).unwrap()
}

#[test]
fn sysfs_takes_over_the_trigger_writes_brightness_and_restores_on_release() {
    let root = fake_leds();
    let r = root.path();
    let mut act = SysfsLed::open_in(r, "ACT").unwrap();
    assert_eq!(act.previous_trigger(), Some("mmc0"));
    assert_eq!(act.max_brightness(), 255);
    assert_eq!(
        read(r, "ACT", "trigger"),
        "none",
        "kernel trigger switched off"
    );

    act.set(true).unwrap();
    assert_eq!(read(r, "ACT", "brightness"), "255", "on = max_brightness");
    act.set(false).unwrap();
    assert_eq!(read(r, "ACT", "brightness"), "0");
    act.set(true).unwrap();

    act.release();
    assert_eq!(read(r, "ACT", "brightness"), "0", "left off");
    assert_eq!(
        read(r, "ACT", "trigger"),
        "mmc0",
        "original trigger restored"
    );
    assert!(matches!(act.set(true), Err(LedError::Released)));

    // Release is idempotent: a second one (or the drop) does not write again.
    fs::write(r.join("ACT/trigger"), PI_TRIGGERS).unwrap();
    act.release();
    drop(act);
    assert_eq!(read(r, "ACT", "trigger"), PI_TRIGGERS);
    assert_eq!(
        read(r, "PWR", "trigger"),
        "none [default-on] timer\n",
        "others untouched"
    );
}

#[test]
fn sysfs_restores_on_drop_and_uses_the_leds_own_max_brightness() {
    let root = fake_leds();
    let r = root.path();
    {
        let mut pwr = SysfsLed::open_in(r, "PWR").unwrap();
        assert_eq!(pwr.previous_trigger(), Some("default-on"));
        pwr.set(true).unwrap();
        assert_eq!(read(r, "PWR", "brightness"), "1");
    }
    assert_eq!(read(r, "PWR", "brightness"), "0");
    assert_eq!(read(r, "PWR", "trigger"), "default-on");
}

#[test]
fn sysfs_missing_led_lists_the_leds_that_exist() {
    let root = fake_leds();
    let err = SysfsLed::open_in(root.path(), "led0").unwrap_err();
    match &err {
        LedError::NoSuchLed { available, .. } => assert_eq!(available, &["ACT", "PWR", "mmc0::"]),
        other => panic!("wrong error: {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(r#"no LED named "led0""#), "{msg}");
    assert!(msg.contains(&root.path().display().to_string()), "{msg}");
    assert!(msg.contains("ACT, PWR, mmc0::"), "{msg}");
    assert!(msg.contains("--led none"), "{msg}");
}

#[test]
fn sysfs_without_an_led_class_says_so() {
    let root = tempfile::tempdir().unwrap();
    let empty = SysfsLed::open_in(root.path(), "ACT")
        .unwrap_err()
        .to_string();
    assert!(empty.contains("LEDs present: none"), "{empty}");

    let gone = root.path().join("no-such-dir");
    let msg = SysfsLed::open_in(&gone, "ACT").unwrap_err().to_string();
    assert!(
        msg.contains("cannot list LEDs in") && msg.contains("no-such-dir"),
        "{msg}"
    );
}

#[test]
fn sysfs_bad_max_brightness_is_reported_with_its_path() {
    let root = fake_leds();
    fs::write(root.path().join("ACT/max_brightness"), "bright\n").unwrap();
    let msg = SysfsLed::open_in(root.path(), "ACT")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("ACT/max_brightness") && msg.contains("bright"),
        "{msg}"
    );
    assert_eq!(
        read(root.path(), "ACT", "trigger"),
        PI_TRIGGERS,
        "nothing taken over"
    );
}

#[test]
fn sysfs_without_write_permission_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root writes read-only files anyway: check it for real as an unprivileged user.
        return rerun_as_nobody("sysfs_without_write_permission_is_a_clear_error");
    }
    let root = fake_leds();
    let trigger = root.path().join("ACT/trigger");
    fs::set_permissions(&trigger, fs::Permissions::from_mode(0o444)).unwrap();
    let err = SysfsLed::open_in(root.path(), "ACT").unwrap_err();
    assert!(matches!(err, LedError::PermissionDenied { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("ACT/trigger") && msg.contains("root"), "{msg}");
}

/// Runs one test of this binary again as user nobody (uid and gid 65534, no groups), through
/// `setpriv`, for checks that root's privileges would void. Where privileges cannot be dropped
/// (no setpriv, or the binary out of nobody's reach) the check is skipped, saying so, except
/// under CI=true, where that fails: CI must not pass on a check it did not make.
fn rerun_as_nobody(test: &str) {
    let exe = std::env::current_exe().unwrap();
    let as_nobody = |args: &[&str]| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        // Under qemu-user the test binary needs its emulator again.
        match std::env::var("CAMCAST_EXEC_WRAPPER") {
            Ok(wrapper) if !wrapper.is_empty() => cmd.arg(wrapper),
            _ => &mut cmd,
        };
        cmd.arg(&exe).args(args).output()
    };
    // Can nobody run this binary at all?
    let probe = as_nobody(&["--list"]);
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        let why = match &probe {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        };
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: cannot run as user nobody under CI=true: {why}"
        );
        eprintln!("SKIPPED {test}: root, and cannot run it as user nobody: {why}");
        return;
    }
    let out = as_nobody(&[test, "--exact", "--nocapture"]).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} as user nobody: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn gpio_off_a_raspberry_pi_is_a_clear_error_not_a_panic() {
    let model = fs::read_to_string("/proc/device-tree/model").unwrap_or_default();
    if model.contains("Raspberry Pi") {
        eprintln!("skipped: this is a {model}");
        return;
    }
    let err = GpioLed::open(17, false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("status LED on GPIO 17: "), "{msg}");
    assert!(msg.contains("Raspberry Pi"), "{msg}");
    assert!(
        msg.contains("--led sysfs:NAME") && msg.contains("--led none"),
        "{msg}"
    );
    // Through the flag, too.
    let spec: LedSpec = "gpio:17:active-low".parse().unwrap();
    assert!(spec.open().is_err());
}

#[test]
fn led_flag_parses_and_round_trips() {
    for (text, spec) in [
        (
            "gpio:17",
            LedSpec::Gpio {
                pin: 17,
                active_low: false,
            },
        ),
        (
            "gpio:4:active-low",
            LedSpec::Gpio {
                pin: 4,
                active_low: true,
            },
        ),
        ("sysfs:ACT", LedSpec::Sysfs { name: "ACT".into() }),
        (
            "sysfs:mmc0::",
            LedSpec::Sysfs {
                name: "mmc0::".into(),
            },
        ),
        ("none", LedSpec::None),
    ] {
        assert_eq!(text.parse::<LedSpec>().unwrap(), spec, "{text}");
        assert_eq!(spec.to_string(), text);
    }
    assert_eq!(LedSpec::default().to_string(), "sysfs:ACT");
    for (bad, says) in [
        ("gpio", "expected gpio:PIN[:active-low], sysfs:NAME or none"),
        ("gpio:x", "not a BCM GPIO number"),
        ("gpio:300", "not a BCM GPIO number"),
        ("gpio:17:inverted", "the only option is active-low"),
        ("sysfs:", "not an LED name"),
        ("sysfs:../../etc", "not an LED name"),
        ("led0", "expected gpio:PIN[:active-low], sysfs:NAME or none"),
    ] {
        let err = bad.parse::<LedSpec>().unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

/// The whole path: state machine → sysfs files, on tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn driver_blinks_a_sysfs_led_and_hands_it_back_on_shutdown() {
    let root = fake_leds();
    let r = root.path().to_owned();
    let status = StatusCell::new();
    status.set(State::Fault, "camera error");
    let shutdown = CancellationToken::new();
    let t0 = Instant::now();
    let led = SysfsLed::open_in(&r, "ACT").unwrap();
    let task = led::spawn(Box::new(led), &status, shutdown.clone());

    let at = |ms| tokio::time::sleep_until(t0 + Duration::from_millis(ms));
    at(50).await;
    assert_eq!(
        read(&r, "ACT", "brightness"),
        "255",
        "fault: first 100 ms on"
    );
    at(150).await;
    assert_eq!(read(&r, "ACT", "brightness"), "0", "then 100 ms off");
    status.set(State::Ready, "idle: no viewers");
    at(160).await;
    assert_eq!(read(&r, "ACT", "brightness"), "255", "ready: lit at once");
    at(5_000).await;
    assert_eq!(read(&r, "ACT", "brightness"), "255", "and held");

    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(read(&r, "ACT", "brightness"), "0");
    assert_eq!(read(&r, "ACT", "trigger"), "mmc0");
}
