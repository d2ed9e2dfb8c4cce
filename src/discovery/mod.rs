//! LAN discovery over mDNS/DNS-SD (`_camcast._tcp.local.`), with the `mdns-sd` crate.
//!
//! - [`advertise`]: the server announces itself: an instance name ("camcast on HOST"), its
//!   gRPC port and a TXT record saying what it serves (see [`Advertisement::txt`] for the keys).
//!   Advertising never stops the camera: any failure is a logged warning.
//! - [`browse`] (viewer side, with the `viewer` feature): listens for a while and returns every
//!   camera that answered. What the viewer then does with them (the table, the question, the
//!   exit status) is the viewer's: `crate::view::choose`.

pub mod advertise;
#[cfg(feature = "viewer")]
pub mod browse;

pub use advertise::{advertise, spawn, Advertisement, Advertiser};
#[cfg(feature = "viewer")]
pub use browse::{browse, DiscoveryError, Found};

/// The DNS-SD service type camcast servers register.
pub const SERVICE_TYPE: &str = "_camcast._tcp.local.";
/// The gRPC APIs every camcast server speaks, as listed in the `api` TXT key. `seed` is the
/// tutorial API's token on the wire, kept as older viewers parse it.
pub const API_VERSIONS: &str = "seed,v1";
