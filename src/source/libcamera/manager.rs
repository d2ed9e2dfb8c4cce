//! libcamera's camera manager: one per process, and the list of cameras it sees.
//!
//! libcamera allows one `CameraManager` per process and *aborts the process* (a Fatal log)
//! when a second one is created. Every manager here is made under one process-wide lock, so a
//! second user (another source, [`list_cameras`]) gets an error instead.

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
