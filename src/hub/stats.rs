//! What one camera counts beyond the hub's own counters: frames dropped (by reason), encoded
//! or passed through and how long encoding took; viewers, frames sent and skipped and bytes
//! sent, by API; viewers refused. Owned by the camera's hub and counted where each event
//! happens; GetInfo and `/metrics` (crate::metrics) read the same numbers.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::Api;
use crate::frame::{CapturedFrame, FrameOrigin};

/// Encode-time buckets, in seconds: from a small frame on a desktop (~0.3 ms) to 1080p on a
/// Pi Zero (~100 ms and more).
pub(crate) const ENCODE_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.033, 0.066, 0.1, 0.2, 0.5, 1.0,
];

/// Why the hub dropped a frame instead of publishing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The source said the frame was bad (truncated, corrupt, failed to encode).
    BadFrame,
    /// The source returned something that is not a JPEG (caught by the hub's own check).
    NotJpeg,
}

impl DropReason {
    pub const ALL: [DropReason; 2] = [DropReason::BadFrame, DropReason::NotJpeg];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BadFrame => "bad_frame",
            DropReason::NotJpeg => "not_jpeg",
        }
    }
}

/// Why a camera's hub turned a viewer away (connection-level refusals are [`Refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerRefusal {
    /// `max_viewers` viewers were already watching.
    ViewerCap,
    /// The viewer's host (or IPv6 site) already had `max_viewers_per_address` viewers.
    PerAddressCap,
}

impl ViewerRefusal {
    pub const ALL: [ViewerRefusal; 2] = [ViewerRefusal::ViewerCap, ViewerRefusal::PerAddressCap];

    pub fn as_str(self) -> &'static str {
        match self {
            ViewerRefusal::ViewerCap => "viewer_cap",
            ViewerRefusal::PerAddressCap => "per_address_viewer_cap",
        }
    }
}

/// One API's share of a camera's viewers and traffic.
#[derive(Debug, Default)]
pub(crate) struct ApiStats {
    pub(crate) viewers: Gauge,
    pub(crate) frames_sent: Counter,
    pub(crate) frames_skipped: Counter,
    pub(crate) bytes_sent: Counter,
}

/// What one camera counts beyond the hub's own counters (captured frames, capture starts and
/// errors, viewers admitted, which the hub keeps for GetInfo). Owned by the camera's hub.
#[derive(Debug)]
/// Fields are crate-visible for the `/metrics` collector, which reads them in place.
pub struct CameraStats {
    pub(crate) dropped: [Counter; DropReason::ALL.len()],
    pub(crate) refused: [Counter; ViewerRefusal::ALL.len()],
    pub(crate) encoded: Counter,
    pub(crate) passed_through: Counter,
    pub(crate) encode_seconds: Histogram,
    /// Indexed by [`api_index`].
    pub(crate) apis: [ApiStats; Api::ALL.len()],
}

impl Default for CameraStats {
    fn default() -> Self {
        CameraStats {
            dropped: Default::default(),
            refused: Default::default(),
            encoded: Counter::default(),
            passed_through: Counter::default(),
            encode_seconds: Histogram::new(ENCODE_BUCKETS),
            apis: Default::default(),
        }
    }
}

pub(crate) fn api_index(api: Api) -> usize {
    Api::ALL
        .iter()
        .position(|a| *a == api)
        .expect("Api::ALL lists every API")
}

impl CameraStats {
    /// A frame the capture loop publishes: passed through or encoded, and how long encoding took.
    pub fn frame_published(&self, frame: &CapturedFrame) {
        match frame.origin {
            FrameOrigin::Camera => self.passed_through.inc(),
            FrameOrigin::Encoded => self.encoded.inc(),
        };
        if let Some(took) = frame.encode_time {
            self.encode_seconds.observe(took.as_secs_f64());
        }
    }

    /// A frame the capture loop dropped; returns the drops so far, all reasons together.
    pub fn frame_dropped(&self, why: DropReason) -> u64 {
        self.dropped[why as usize].inc();
        self.dropped_total()
    }

    /// Frames dropped so far, all reasons together (GetInfo's `frames_dropped`).
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(Counter::get).sum()
    }

    pub fn viewer_refused(&self, why: ViewerRefusal) {
        self.refused[why as usize].inc();
    }

    /// Viewers refused so far, all reasons together (GetInfo's `viewers_rejected`).
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(Counter::get).sum()
    }

    pub fn viewer_joined(&self, api: Api) {
        self.apis[api_index(api)].viewers.inc();
    }

    pub fn viewer_left(&self, api: Api) {
        self.apis[api_index(api)].viewers.dec();
    }

    /// A frame handed to a viewer, after it skipped `skipped` newer-than-its-last frames.
    pub fn frame_delivered(&self, api: Api, skipped: u64) {
        let a = &self.apis[api_index(api)];
        a.frames_sent.inc();
        a.frames_skipped.inc_by(skipped);
    }

    /// Bytes a transport handed to its connection for a viewer (see docs/metrics.md for what
    /// each transport counts).
    pub fn bytes_sent(&self, api: Api, bytes: usize) {
        self.apis[api_index(api)]
            .bytes_sent
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// Viewers watching through `api` now.
    pub fn viewers(&self, api: Api) -> i64 {
        self.apis[api_index(api)].viewers.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_and_refusals_sum_across_reasons() {
        let s = CameraStats::default();
        assert_eq!(s.frame_dropped(DropReason::BadFrame), 1);
        assert_eq!(s.frame_dropped(DropReason::NotJpeg), 2);
        assert_eq!(s.dropped_total(), 2);
        s.viewer_refused(ViewerRefusal::ViewerCap);
        assert_eq!(s.refused_total(), 1);
    }
}
