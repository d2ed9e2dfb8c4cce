//! An LED on a Raspberry Pi GPIO pin, driven through `rppal`.
//!
//! Pins are BCM GPIO numbers (GPIO 17 is physical pin 11 on the 40-pin header). Wired
//! active-high (pin → resistor → LED → ground) the pin is driven high for "on"; wired
//! active-low (3.3 V → resistor → LED → pin) it is driven low for "on".
//!
//! The pin is switched to an output already at the "off" level, so opening never flashes the
//! LED. [`Led::release`] (and dropping a [`GpioLed`]) drives it off and hands the pin back
//! in the mode it had before (`rppal` restores the previous mode when the pin is dropped).

use rppal::gpio::{Gpio, Level, OutputPin};

use super::{Led, LedError};

/// A status LED on one GPIO pin.
#[derive(Debug)]
pub struct GpioLed {
    pin: Option<OutputPin>,
    bcm: u8,
    active_low: bool,
}

impl GpioLed {
    /// Claims BCM GPIO `bcm` as an output, LED off. Fails with a clear [`LedError::Gpio`]
    /// off a Raspberry Pi, without permission, or when the pin is missing or taken.
    pub fn open(bcm: u8, active_low: bool) -> Result<GpioLed, LedError> {
        let gpio = Gpio::new().map_err(|e| gpio_error(bcm, &e))?;
        let pin = gpio.get(bcm).map_err(|e| gpio_error(bcm, &e))?;
        let pin = if active_low {
            pin.into_output_high()
        } else {
            pin.into_output_low()
        };
        tracing::debug!(gpio = bcm, active_low, "claimed the LED pin");
        Ok(GpioLed {
            pin: Some(pin),
            bcm,
            active_low,
        })
    }

    /// The BCM GPIO number.
    pub fn pin(&self) -> u8 {
        self.bcm
    }

    fn level(&self, on: bool) -> Level {
        if on != self.active_low {
            Level::High
        } else {
            Level::Low
        }
    }
}

impl Led for GpioLed {
    fn set(&mut self, on: bool) -> Result<(), LedError> {
        let level = self.level(on);
        let pin = self.pin.as_mut().ok_or(LedError::Released)?;
        pin.write(level);
        Ok(())
    }

    fn release(&mut self) {
        let off = self.level(false);
        if let Some(mut pin) = self.pin.take() {
            pin.write(off);
            // Dropping the pin restores its previous mode.
            drop(pin);
            tracing::debug!(gpio = self.bcm, "released the LED pin");
        }
    }
}

impl Drop for GpioLed {
    fn drop(&mut self) {
        self.release();
    }
}

/// Turns an `rppal` error into one that says what is wrong and what to do about it.
pub(crate) fn gpio_error(bcm: u8, e: &rppal::gpio::Error) -> LedError {
    use rppal::gpio::Error as E;
    let reason = match e {
        E::UnknownModel => "this does not look like a Raspberry Pi (rppal cannot identify the \
            board), so there is no GPIO to drive; use --led sysfs:NAME for an LED the kernel \
            knows, or --led none"
            .to_string(),
        E::PermissionDenied(path) => format!(
            "permission denied opening {path}; add camcast's user to the `gpio` group or run \
             it as root, or use --led none"
        ),
        E::PinNotAvailable(_) => {
            "this board has no such GPIO (pins are BCM GPIO numbers, e.g. 17 is header pin 11)"
                .to_string()
        }
        E::PinUsed(_) => "the pin is already in use by another part of camcast".to_string(),
        other => format!("cannot access the GPIO: {other}"),
    };
    LedError::Gpio { pin: bcm, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rppal::gpio::Error as E;

    fn msg(e: E) -> String {
        gpio_error(17, &e).to_string()
    }

    #[test]
    fn rppal_errors_become_actionable_messages() {
        let m = msg(E::UnknownModel);
        assert!(m.starts_with("status LED on GPIO 17: "), "{m}");
        assert!(
            m.contains("Raspberry Pi") && m.contains("--led none"),
            "{m}"
        );
        let m = msg(E::PermissionDenied("/dev/gpiomem".into()));
        assert!(
            m.contains("/dev/gpiomem") && m.contains("gpio` group"),
            "{m}"
        );
        assert!(msg(E::PinNotAvailable(17)).contains("BCM"));
        assert!(msg(E::PinUsed(17)).contains("already in use"));
        let m = msg(E::Io(std::io::Error::other("boom")));
        assert!(m.contains("boom"), "{m}");
    }
}
