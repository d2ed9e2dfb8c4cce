//! libcamera's camera manager: one per process, and the list of cameras it sees.
//!
//! libcamera allows one `CameraManager` per process and *aborts the process* (a Fatal log)
//! when a second one is created. Every manager here is made under one process-wide lock, so a
//! second user (another source, [`list_cameras`]) gets an error instead.

use std::fmt;
use std::sync::{Mutex, MutexGuard, TryLockError};

use ::libcamera::camera_manager::CameraManager;
use ::libcamera::properties;

use crate::source::SourceError;

/// Held for the whole life of a `CameraManager`: see the module docs.
static MANAGER_IN_USE: Mutex<()> = Mutex::new(());

pub(super) fn lock_manager() -> Result<MutexGuard<'static, ()>, SourceError> {
    match MANAGER_IN_USE.try_lock() {
        Ok(guard) => Ok(guard),
        // A panic while holding it left no manager behind (it was dropped while unwinding).
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err(SourceError::Failed(
            "libcamera is already in use in this process (libcamera allows one camera manager \
             per process)"
                .into(),
        )),
    }
}

/// One camera as libcamera lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// What `--source libcamera:N` takes.
    pub index: usize,
    /// libcamera's id, e.g. "/base/soc/i2c0mux/i2c@1/imx708@1a".
    pub id: String,
    /// The sensor or product, e.g. "imx708"; "unknown model" if libcamera does not say.
    pub model: String,
}

/// The cameras libcamera sees, in `--source libcamera:N` order. Starts (and stops) a camera
/// manager, which takes a moment; fails while a [`LibcameraSource`](super::LibcameraSource) is running in this process.
pub fn list_cameras() -> Result<Vec<CameraInfo>, SourceError> {
    let _guard = lock_manager()?;
    let manager = start_manager()?;
    let cameras = manager.cameras();
    let list = cameras
        .iter()
        .enumerate()
        .map(|(index, camera)| CameraInfo {
            index,
            id: camera.id().to_string(),
            model: model_of(&camera),
        })
        .collect();
    drop(cameras);
    drop(manager);
    Ok(list)
}

pub(super) fn model_of(camera: &::libcamera::camera::Camera<'_>) -> String {
    camera
        .properties()
        .get::<properties::Model>()
        .map(|m| m.0)
        .unwrap_or_else(|_| "unknown model".into())
}

/// A new camera manager; the caller holds [`lock_manager`]'s guard for as long as it lives.
pub(super) fn start_manager() -> Result<CameraManager, SourceError> {
    CameraManager::new()
        .map_err(|e| SourceError::Failed(format!("libcamera camera manager did not start: {e}")))
}

/// The libcamera part of `camcast devices`: the cameras, or why they could not be listed.
pub struct Listing<'a>(pub &'a Result<Vec<CameraInfo>, SourceError>);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Err(e) => writeln!(f, "libcamera: cannot list cameras: {e}"),
            Ok(list) if list.is_empty() => writeln!(
                f,
                "No libcamera cameras found (is a camera module connected, and listed by \
                 `rpicam-hello --list-cameras`?)."
            ),
            Ok(list) => {
                writeln!(f, "libcamera cameras:")?;
                for camera in list {
                    writeln!(
                        f,
                        "  --source libcamera:{:<3} {}  ({})",
                        camera.index, camera.model, camera.id
                    )?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_names_each_camera_by_its_source_spec() {
        let cameras = Ok(vec![
            CameraInfo {
                index: 0,
                id: "/base/soc/i2c0mux/i2c@1/imx708@1a".into(),
                model: "imx708".into(),
            },
            CameraInfo {
                index: 1,
                id: "\\_SB_.PCI0.XHC_.RHUB.HS05-5:1.0-0c45:6366".into(),
                model: "unknown model".into(),
            },
        ]);
        let text = Listing(&cameras).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "libcamera cameras:");
        assert_eq!(
            lines[1],
            "  --source libcamera:0   imx708  (/base/soc/i2c0mux/i2c@1/imx708@1a)"
        );
        assert!(
            lines[2].starts_with("  --source libcamera:1   unknown model"),
            "{text}"
        );
        assert!(Listing(&Ok(vec![]))
            .to_string()
            .starts_with("No libcamera cameras found"));
        let failed = Err(SourceError::Failed("libcamera is already in use".into()));
        assert_eq!(
            Listing(&failed).to_string(),
            "libcamera: cannot list cameras: source failed: libcamera is already in use\n"
        );
    }
}
