//! `camcast devices`: every camera this build can open. The V4L2 nodes
//! ([`super::v4l2::devices`]) and, when built with the `libcamera` feature, the cameras
//! libcamera sees (the Raspberry Pi's CSI camera modules), numbered as `--source libcamera:N`
//! takes them.
//!
//! Nothing here fails as a whole: what cannot be read is reported in the listing.

use std::fmt;

use super::v4l2::devices::{self, DeviceReport};
#[cfg(feature = "libcamera")]
use super::{libcamera, SourceError};

/// What `camcast devices` prints; [`fmt::Display`] is the listing.
pub struct Cameras {
    pub v4l2: Vec<DeviceReport>,
    #[cfg(feature = "libcamera")]
    pub libcamera: Result<Vec<libcamera::CameraInfo>, SourceError>,
}

/// Looks at every camera: the V4L2 nodes, then libcamera's list (which starts and stops a
/// camera manager, so it fails while a libcamera source runs in this process).
pub fn list() -> Cameras {
    Cameras {
        v4l2: devices::list_devices(),
        #[cfg(feature = "libcamera")]
        libcamera: libcamera::list_cameras(),
    }
}

impl fmt::Display for Cameras {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", devices::Listing(&self.v4l2))?;
        #[cfg(feature = "libcamera")]
        write!(f, "\n{}", libcamera::Listing(&self.libcamera))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cameras_at_all_says_so_for_each_kind() {
        let none = Cameras {
            v4l2: Vec::new(),
            #[cfg(feature = "libcamera")]
            libcamera: Ok(Vec::new()),
        };
        let text = none.to_string();
        assert!(text.starts_with("No V4L2 video devices found"), "{text}");
        #[cfg(feature = "libcamera")]
        assert!(text.contains("\nNo libcamera cameras found"), "{text}");
    }
}
