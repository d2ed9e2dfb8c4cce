//! Numbers both ends of the wire agree on: the default port and the message size limits. The
//! server (`config`, `grpc`) and the client (`client`, `camcast-view`) take them from here, so
//! neither side imports the other.

/// The port camcast (and the tutorial) listen on.
pub const DEFAULT_PORT: u16 = 1234;
/// Largest message either side accepts: a 4K MJPEG frame can exceed tonic's 4 MiB default.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Default for the largest request the server decodes: requests carry a name and a number.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
