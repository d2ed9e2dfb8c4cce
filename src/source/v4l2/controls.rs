//! Camera controls (brightness, power-line frequency, exposure...), found by name.
//!
//! We enumerate with the plain VIDIOC_QUERYCTRL / G_CTRL / S_CTRL ioctls rather than the v4l
//! crate's `query_controls`: that one also walks compound controls and unwraps on control types
//! and names it does not know (vivid has plenty), which would turn a driver quirk into a panic.
//! Plain QUERYCTRL with V4L2_CTRL_FLAG_NEXT_CTRL visits only simple controls: all a webcam has.

use std::io;

use v4l::v4l2;
use v4l::v4l_sys::{v4l2_control, v4l2_queryctrl, v4l2_querymenu};
use v4l::Device;

use super::hw::c_text;

const NEXT_CTRL: u32 = 0x8000_0000;
const FLAG_DISABLED: u32 = 0x0001;
const FLAG_READ_ONLY: u32 = 0x0004;
const FLAG_INACTIVE: u32 = 0x0010;
const FLAG_WRITE_ONLY: u32 = 0x0040;

/// Bounds on device-supplied counts, so a confused driver cannot keep us looping.
const MAX_CONTROLS: usize = 512;
const MAX_MENU_ITEMS: i64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    Integer,
    Boolean,
    Menu,
    IntegerMenu,
    Button,
    Integer64,
    Bitmask,
    String,
    Other(u32),
}

impl ControlKind {
    fn from_raw(t: u32) -> Self {
        match t {
            1 => ControlKind::Integer,
            2 => ControlKind::Boolean,
            3 => ControlKind::Menu,
            4 => ControlKind::Button,
            5 => ControlKind::Integer64,
            7 => ControlKind::String,
            8 => ControlKind::Bitmask,
            9 => ControlKind::IntegerMenu,
            other => ControlKind::Other(other),
        }
    }

    /// Whether the control holds a number G_CTRL/S_CTRL can read and write.
    fn has_value(self) -> bool {
        matches!(
            self,
            ControlKind::Integer
                | ControlKind::Boolean
                | ControlKind::Menu
                | ControlKind::IntegerMenu
                | ControlKind::Bitmask
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ControlKind::Integer => "integer",
            ControlKind::Boolean => "boolean",
            ControlKind::Menu => "menu",
            ControlKind::IntegerMenu => "integer menu",
            ControlKind::Button => "button",
            ControlKind::Integer64 => "integer64",
            ControlKind::Bitmask => "bitmask",
            ControlKind::String => "string",
            ControlKind::Other(_) => "other",
        }
    }
}

/// One control as the device describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlInfo {
    pub id: u32,
    pub name: String,
    pub kind: ControlKind,
    pub min: i64,
    pub max: i64,
    pub step: i64,
    pub default: i64,
    /// `None` when it cannot be read (write-only, inactive, or the read failed).
    pub current: Option<i64>,
    /// Menu entries as (value, label).
    pub menu: Vec<(i64, String)>,
    pub read_only: bool,
    pub inactive: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the camera has no control named {name:?}; it has: {available}")]
    Unknown { name: String, available: String },
    #[error("control {name:?} takes {min}..={max}, not {value}")]
    OutOfRange {
        name: String,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("control {name:?} cannot be set: it is {why}")]
    NotSettable { name: String, why: &'static str },
    #[error("could not {what} control {name:?}: {source}")]
    Io {
        what: &'static str,
        name: String,
        source: io::Error,
    },
}

/// Every simple control of the device, in driver order. Fails only if the very first query
/// fails with something other than "no controls".
pub fn query(dev: &Device) -> io::Result<Vec<ControlInfo>> {
    let fd = dev.handle().fd();
    let mut controls = Vec::new();
    let mut id = 0u32;
    while controls.len() < MAX_CONTROLS {
        // SAFETY: v4l2_queryctrl is plain old data; all-zero is a valid value.
        let mut q: v4l2_queryctrl = unsafe { std::mem::zeroed() };
        q.id = id | NEXT_CTRL;
        // SAFETY: VIDIOC_QUERYCTRL reads and writes one v4l2_queryctrl.
        let res = unsafe {
            v4l2::ioctl(
                fd,
                v4l2::vidioc::VIDIOC_QUERYCTRL,
                &mut q as *mut _ as *mut _,
            )
        };
        match res {
            Ok(()) => {}
            // EINVAL ends the enumeration; ENOTTY means the driver has no controls at all.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTTY)) => break,
            Err(e) if controls.is_empty() => return Err(e),
            Err(_) => break,
        }
        if q.id <= id {
            break; // a driver that does not advance would loop forever
        }
        id = q.id;
        let kind = ControlKind::from_raw(q.type_);
        // Class headings (type 6) are not controls; disabled ones are not offered.
        if q.type_ == 6 || q.flags & FLAG_DISABLED != 0 {
            continue;
        }
        controls.push(describe(fd, &q, kind));
    }
    Ok(controls)
}

fn describe(fd: i32, q: &v4l2_queryctrl, kind: ControlKind) -> ControlInfo {
    let readable = kind.has_value() && q.flags & FLAG_WRITE_ONLY == 0;
    ControlInfo {
        id: q.id,
        name: c_text(&q.name),
        kind,
        min: i64::from(q.minimum),
        max: i64::from(q.maximum),
        step: i64::from(q.step),
        default: i64::from(q.default_value),
        current: if readable { get(fd, q.id).ok() } else { None },
        menu: match kind {
            ControlKind::Menu | ControlKind::IntegerMenu => menu_items(fd, q, kind),
            _ => Vec::new(),
        },
        read_only: q.flags & FLAG_READ_ONLY != 0,
        inactive: q.flags & FLAG_INACTIVE != 0,
    }
}

fn menu_items(fd: i32, q: &v4l2_queryctrl, kind: ControlKind) -> Vec<(i64, String)> {
    let (min, max) = (i64::from(q.minimum), i64::from(q.maximum));
    let max = max.min(min.saturating_add(MAX_MENU_ITEMS - 1));
    (min.max(0)..=max)
        .filter_map(|index| {
            // SAFETY: v4l2_querymenu is plain old data; all-zero is a valid value.
            let mut m: v4l2_querymenu = unsafe { std::mem::zeroed() };
            m.id = q.id;
            m.index = u32::try_from(index).ok()?;
            // SAFETY: VIDIOC_QUERYMENU reads and writes one v4l2_querymenu. Drivers may skip
            // indices (EINVAL), which we leave out.
            unsafe {
                v4l2::ioctl(
                    fd,
                    v4l2::vidioc::VIDIOC_QUERYMENU,
                    &mut m as *mut _ as *mut _,
                )
            }
            .ok()?;
            // SAFETY: the driver fills `name` for menus and `value` for integer menus.
            let label = unsafe {
                match kind {
                    ControlKind::IntegerMenu => {
                        // The struct is packed: copy the field out before formatting it.
                        let value = m.__bindgen_anon_1.value;
                        value.to_string()
                    }
                    _ => c_text(&m.__bindgen_anon_1.name),
                }
            };
            Some((index, label))
        })
        .collect()
}

fn get(fd: i32, id: u32) -> io::Result<i64> {
    let mut c = v4l2_control { id, value: 0 };
    // SAFETY: VIDIOC_G_CTRL reads and writes one v4l2_control.
    unsafe { v4l2::ioctl(fd, v4l2::vidioc::VIDIOC_G_CTRL, &mut c as *mut _ as *mut _) }?;
    Ok(i64::from(c.value))
}

/// Writes one control by id, unchecked (see [`check`]); for a button, presses it.
pub fn set(dev: &Device, id: u32, value: i32) -> io::Result<()> {
    let mut c = v4l2_control { id, value };
    // SAFETY: VIDIOC_S_CTRL reads and writes one v4l2_control.
    unsafe {
        v4l2::ioctl(
            dev.handle().fd(),
            v4l2::vidioc::VIDIOC_S_CTRL,
            &mut c as *mut _ as *mut _,
        )
    }
}

/// Finds a control by name, ignoring case and surrounding space.
pub fn find<'a>(controls: &'a [ControlInfo], name: &str) -> Result<&'a ControlInfo, ControlError> {
    let wanted = name.trim();
    controls
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(wanted))
        .ok_or_else(|| ControlError::Unknown {
            name: name.to_string(),
            available: if controls.is_empty() {
                "no controls".into()
            } else {
                controls
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// Checks that `value` can be written to `control`, with a message naming the limits if not.
pub fn check(control: &ControlInfo, value: i64) -> Result<i32, ControlError> {
    let name = || control.name.clone();
    if control.read_only {
        return Err(ControlError::NotSettable {
            name: name(),
            why: "read-only",
        });
    }
    if !control.kind.has_value() {
        return Err(ControlError::NotSettable {
            name: name(),
            why: "not a number (button, string or compound)",
        });
    }
    let in_menu = control.menu.is_empty() || control.menu.iter().any(|(v, _)| *v == value);
    if value < control.min || value > control.max || !in_menu {
        return Err(ControlError::OutOfRange {
            name: name(),
            value,
            min: control.min,
            max: control.max,
        });
    }
    i32::try_from(value).map_err(|_| ControlError::OutOfRange {
        name: name(),
        value,
        min: control.min,
        max: control.max,
    })
}

/// Applies `wanted` (name, value) pairs in order. The first problem stops and is returned.
pub fn apply(dev: &Device, wanted: &[(String, i64)]) -> Result<(), ControlError> {
    if wanted.is_empty() {
        return Ok(());
    }
    let available = query(dev).map_err(|source| ControlError::Io {
        what: "list",
        name: wanted[0].0.clone(),
        source,
    })?;
    for (name, value) in wanted {
        let control = find(&available, name)?;
        let raw = check(control, *value)?;
        set(dev, control.id, raw).map_err(|source| ControlError::Io {
            what: "set",
            name: control.name.clone(),
            source,
        })?;
        tracing::info!(control = %control.name, value, "camera control set");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(name: &str, kind: ControlKind, min: i64, max: i64) -> ControlInfo {
        ControlInfo {
            id: 0x0098_0900,
            name: name.into(),
            kind,
            min,
            max,
            step: 1,
            default: min,
            current: Some(min),
            menu: Vec::new(),
            read_only: false,
            inactive: false,
        }
    }

    fn webcam_controls() -> Vec<ControlInfo> {
        let mut plf = control("Power Line Frequency", ControlKind::Menu, 0, 2);
        plf.menu = vec![
            (0, "Disabled".into()),
            (1, "50 Hz".into()),
            (2, "60 Hz".into()),
        ];
        vec![control("Brightness", ControlKind::Integer, -64, 64), plf]
    }

    #[test]
    fn names_match_ignoring_case_and_space() {
        let all = webcam_controls();
        assert_eq!(find(&all, "brightness").unwrap().name, "Brightness");
        assert_eq!(
            find(&all, " power line FREQUENCY ").unwrap().name,
            "Power Line Frequency"
        );
    }

    #[test]
    fn unknown_name_lists_what_is_available() {
        let err = find(&webcam_controls(), "Focus").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the camera has no control named \"Focus\"; it has: Brightness, Power Line Frequency"
        );
        let err = find(&[], "Focus").unwrap_err();
        assert!(err.to_string().ends_with("it has: no controls"), "{err}");
    }

    #[test]
    fn values_are_checked_against_range_and_menu() {
        let all = webcam_controls();
        assert_eq!(check(&all[0], -64).unwrap(), -64);
        let err = check(&all[0], 65).unwrap_err();
        assert_eq!(
            err.to_string(),
            "control \"Brightness\" takes -64..=64, not 65"
        );
        let mut sparse = all[1].clone();
        sparse.menu.retain(|(v, _)| *v != 1);
        assert!(check(&sparse, 1).is_err(), "value missing from the menu");
        assert!(check(&sparse, 2).is_ok());
    }

    #[test]
    fn read_only_and_valueless_controls_cannot_be_set() {
        let mut ro = control("Exposure", ControlKind::Integer, 0, 10);
        ro.read_only = true;
        assert!(check(&ro, 5).unwrap_err().to_string().contains("read-only"));
        let button = control("Reset", ControlKind::Button, 0, 0);
        assert!(matches!(
            check(&button, 0),
            Err(ControlError::NotSettable { .. })
        ));
    }

    #[test]
    fn control_kinds_come_from_v4l2_numbers() {
        assert_eq!(ControlKind::from_raw(3), ControlKind::Menu);
        assert_eq!(ControlKind::from_raw(0x0106), ControlKind::Other(0x0106));
        assert!(ControlKind::Bitmask.has_value());
        assert!(!ControlKind::String.has_value());
    }
}
