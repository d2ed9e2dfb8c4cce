//! An LED of the Linux LED class: `/sys/class/leds/<name>/{trigger,brightness,max_brightness}`.
//!
//! On a Raspberry Pi the onboard activity LED is `ACT` (`led0` on older kernels); the kernel
//! normally drives it from a trigger such as `mmc0` (SD card activity). Taking it over:
//!
//! 1. read `trigger` and remember the selected one (the word in `[brackets]`);
//! 2. write `none` to `trigger`, so the kernel stops driving the LED;
//! 3. write `max_brightness` (on) or `0` (off) to `brightness`.
//!
//! [`Led::release`] (and dropping a [`SysfsLed`]) writes `0` to `brightness` and the remembered
//! trigger back to `trigger`, handing the LED back as it was found.
//!
//! The writes are a few bytes to sysfs attributes, served by the kernel without touching a
//! disk, so they are done directly from the async driver rather than on a blocking thread.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{Led, LedError};

/// Where the kernel lists LED class devices.
pub const DEFAULT_ROOT: &str = "/sys/class/leds";

/// A Linux LED class device, taken over from its kernel trigger.
#[derive(Debug)]
pub struct SysfsLed {
    dir: PathBuf,
    max_brightness: u32,
    /// The trigger selected before the takeover; `None` when none could be made out.
    previous_trigger: Option<String>,
    released: bool,
}

impl SysfsLed {
    /// Takes over `/sys/class/leds/<name>`.
    pub fn open(name: &str) -> Result<SysfsLed, LedError> {
        SysfsLed::open_in(Path::new(DEFAULT_ROOT), name)
    }

    /// Takes over `<root>/<name>`; `root` is laid out like `/sys/class/leds` (tests use a
    /// temporary directory).
    pub fn open_in(root: &Path, name: &str) -> Result<SysfsLed, LedError> {
        let dir = root.join(name);
        if !dir.is_dir() {
            return Err(missing(root, name));
        }
        let trigger_path = dir.join("trigger");
        let triggers = std::fs::read_to_string(&trigger_path).map_err(|e| io(&trigger_path, e))?;
        let previous_trigger = selected_trigger(&triggers);
        let max_path = dir.join("max_brightness");
        let max_text = std::fs::read_to_string(&max_path).map_err(|e| io(&max_path, e))?;
        let max_brightness = max_text
            .trim()
            .parse::<u32>()
            .map_err(|_| LedError::Malformed {
                path: max_path.clone(),
                content: max_text.clone(),
            })?
            .max(1);
        write_attr(&trigger_path, "none")?;
        tracing::debug!(led = %dir.display(), previous_trigger = ?previous_trigger, max_brightness,
            "took over LED from its kernel trigger");
        Ok(SysfsLed {
            dir,
            max_brightness,
            previous_trigger,
            released: false,
        })
    }

    /// The trigger that was selected before the takeover (restored on release).
    pub fn previous_trigger(&self) -> Option<&str> {
        self.previous_trigger.as_deref()
    }

    /// The value written to `brightness` for "on".
    pub fn max_brightness(&self) -> u32 {
        self.max_brightness
    }

    /// The LED's directory, e.g. `/sys/class/leds/ACT`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn restore(&mut self) -> Result<(), LedError> {
        write_attr(&self.dir.join("brightness"), "0")?;
        if let Some(t) = &self.previous_trigger {
            write_attr(&self.dir.join("trigger"), t)?;
        }
        Ok(())
    }
}

impl Led for SysfsLed {
    fn set(&mut self, on: bool) -> Result<(), LedError> {
        if self.released {
            return Err(LedError::Released);
        }
        let value = if on {
            self.max_brightness.to_string()
        } else {
            "0".to_string()
        };
        write_attr(&self.dir.join("brightness"), &value)
    }

    fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        match self.restore() {
            Ok(()) => tracing::debug!(led = %self.dir.display(),
                trigger = ?self.previous_trigger, "LED handed back to its kernel trigger"),
            Err(e) => tracing::warn!("cannot hand the status LED back: {e}"),
        }
    }
}

impl Drop for SysfsLed {
    fn drop(&mut self) {
        self.release();
    }
}

/// The selected trigger in a `trigger` file: the word in brackets, as in
/// `none rc-feedback kbd-scrolllock [mmc0] timer heartbeat`.
pub fn selected_trigger(content: &str) -> Option<String> {
    content
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Writes a sysfs attribute: no create (a missing attribute is an error, not a new file) and
/// truncate (so plain files in tests behave like attributes).
fn write_attr(path: &Path, value: &str) -> Result<(), LedError> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| io(path, e))
}

/// Maps an I/O error on `path`, singling out permission problems.
pub(crate) fn io(path: &Path, e: io::Error) -> LedError {
    if e.kind() == io::ErrorKind::PermissionDenied {
        LedError::PermissionDenied {
            path: path.to_owned(),
        }
    } else {
        LedError::Io {
            path: path.to_owned(),
            source: e,
        }
    }
}

/// The error for an LED that does not exist, listing those that do.
fn missing(root: &Path, name: &str) -> LedError {
    match std::fs::read_dir(root) {
        Ok(entries) => {
            let mut available: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            available.sort();
            LedError::NoSuchLed {
                name: name.to_owned(),
                root: root.to_owned(),
                available,
            }
        }
        Err(source) => LedError::NoLedClass {
            root: root.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selected_trigger_is_the_bracketed_word() {
        let t = "none rc-feedback kbd-scrolllock [mmc0] timer heartbeat\n";
        assert_eq!(selected_trigger(t).as_deref(), Some("mmc0"));
        assert_eq!(selected_trigger("[none] timer").as_deref(), Some("none"));
        assert_eq!(
            selected_trigger("none actpwr [default-on]").as_deref(),
            Some("default-on")
        );
        assert_eq!(selected_trigger("none timer"), None);
        assert_eq!(selected_trigger(""), None);
    }

    #[test]
    fn permission_denied_is_its_own_clear_error() {
        let path = Path::new("/sys/class/leds/ACT/trigger");
        let e = io(path, io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(e, LedError::PermissionDenied { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("/sys/class/leds/ACT/trigger"), "{msg}");
        assert!(msg.contains("root") && msg.contains("udev"), "{msg}");
        assert!(msg.contains("--led none"), "{msg}");
    }
}
