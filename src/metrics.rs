//! Prometheus metrics: what each camera and the server count, and `/metrics` in the Prometheus
//! text exposition format (written by the `prometheus-client` crate). docs/metrics.md lists
//! every series.
//!
//! - Every event is counted once, where it happens: the hub's capture loop (frames captured,
//!   dropped, encoded or passed through, encode time), the hub's registry and subscriptions
//!   (viewers, frames sent and skipped, viewer-cap refusals), the transports (bytes sent),
//!   admission (connections and requests refused). A counter GetInfo already reports is read,
//!   not kept twice, so `/metrics` and GetInfo always agree.
//! - The counting side only touches atomics (the encode-time histogram takes its own short
//!   lock per observation, never across a JPEG encode); a scrape reads them and holds nothing
//!   the capture thread or a viewer waits on.
//! - Per-camera state ([`CameraStats`](crate::hub::CameraStats)) lives in each camera's hub, and every per-camera series
//!   has a `camera` label: a server with N hubs gives N label sets. Today there is one camera,
//!   [`DEFAULT_CAMERA`].

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::Registry;

use crate::admission::{Refusal, Refusals};
use crate::hub::stats::{api_index, ApiStats, DropReason, ViewerRefusal};
use crate::hub::{Api, Hub};
use crate::status::State;

/// The `camera` label of the single camera a server has today (no `[[camera]]` name).
pub const DEFAULT_CAMERA: &str = crate::config::CameraName::DEFAULT;

/// The `Content-Type` of `/metrics`: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// One camera as `/metrics` sees it: its label and its hub.
#[derive(Clone)]
pub struct Camera {
    pub name: String,
    pub hub: Hub,
}

impl fmt::Debug for Camera {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Camera").field("name", &self.name).finish()
    }
}

/// What `/metrics` serves: every camera's series and the server's own.
pub struct Metrics {
    registry: Registry,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Metrics of `cameras` and of the server whose admission counts `refusals`.
    pub fn new(cameras: Vec<Camera>, refusals: Arc<Refusals>) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ServerCollector { cameras, refusals }));
        Metrics { registry }
    }

    /// The exposition text: the values at the moment of the call.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Reads every counter at scrape time (hence a collector rather than registered metrics: the
/// hub's own counters are read in place, and each series is written once per camera under one
/// HELP/TYPE header, as the format requires).
#[derive(Debug)]
struct ServerCollector {
    cameras: Vec<Camera>,
    refusals: Arc<Refusals>,
}

/// The snake_case label of a state (`waiting_for_camera`), and every state, so the state
/// series always has one line per state.
fn state_label(s: State) -> &'static str {
    match s {
        State::Starting => "starting",
        State::WaitingForCamera => "waiting_for_camera",
        State::Ready => "ready",
        State::Streaming => "streaming",
        State::Fault => "fault",
    }
}
const STATES: [State; 5] = [
    State::Starting,
    State::WaitingForCamera,
    State::Ready,
    State::Streaming,
    State::Fault,
];

/// Writes one metric family: a HELP/TYPE header, then one sample per label set.
fn family<M: EncodeMetric + TypedMetric, L: prometheus_client::encoding::EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a metric without labels.
fn single<M: EncodeMetric + TypedMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: M,
) -> fmt::Result {
    value.encode(enc.encode_descriptor(name, help, None, M::TYPE)?)
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: i64) -> ConstGauge<i64> {
    ConstGauge::new(v)
}

impl Collector for ServerCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let cams: Vec<(&str, &Hub, crate::hub::CounterReport)> = self
            .cameras
            .iter()
            .map(|c| (c.name.as_str(), &c.hub, c.hub.counters()))
            .collect();
        let per_camera = |f: &dyn Fn(&Hub, &crate::hub::CounterReport) -> u64| {
            cams.iter()
                .map(|(name, hub, c)| ([("camera", *name)], counter(f(hub, c))))
                .collect::<Vec<_>>()
        };
        let per_api = |f: &dyn Fn(&ApiStats) -> u64| {
            cams.iter()
                .flat_map(|(name, hub, _)| {
                    Api::ALL.iter().map(move |api| {
                        let a = &hub.stats().apis[api_index(*api)];
                        ([("camera", *name), ("api", api.as_str())], counter(f(a)))
                    })
                })
                .collect::<Vec<_>>()
        };
        let e = &mut enc;

        family(
            e,
            "camcast_frames_captured",
            "Frames the camera delivered and the hub published (GetInfo frames_captured).",
            per_camera(&|_, c| c.frames_captured),
        )?;
        family(
            e,
            "camcast_frames_encoded",
            "Published frames that camcast JPEG-encoded from raw pixels.",
            per_camera(&|h, _| h.stats().encoded.get()),
        )?;
        family(
            e,
            "camcast_frames_passed_through",
            "Published frames that are the camera's own JPEG, passed through.",
            per_camera(&|h, _| h.stats().passed_through.get()),
        )?;
        family(
            e,
            "camcast_frames_dropped",
            "Frames the hub dropped instead of publishing, by reason (sum: GetInfo frames_dropped).",
            cams.iter().flat_map(|(name, hub, _)| {
                DropReason::ALL.iter().map(move |r| {
                    (
                        [("camera", *name), ("reason", r.as_str())],
                        counter(hub.stats().dropped[*r as usize].get()),
                    )
                })
            }),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "camcast_encode_seconds",
                "Time to JPEG-encode one frame from raw pixels (passed-through frames are not encoded).",
                None,
                Histogram::TYPE,
            )?;
            for (name, hub, _) in &cams {
                hub.stats()
                    .encode_seconds
                    .encode(metric.encode_family(&[("camera", *name)])?)?;
            }
        }
        family(
            e,
            "camcast_capture_starts",
            "Times capture started: at the first viewer, and again after every failure (GetInfo capture_starts).",
            per_camera(&|_, c| c.capture_starts),
        )?;
        family(
            e,
            "camcast_capture_errors",
            "Times the camera failed to start or failed while capturing (GetInfo capture_errors).",
            per_camera(&|_, c| c.capture_errors),
        )?;
        family(
            e,
            "camcast_camera_state",
            "1 for the camera's current state, 0 for the others.",
            cams.iter().flat_map(|(name, hub, _)| {
                let now = hub.status().state;
                STATES.iter().map(move |s| {
                    (
                        [("camera", *name), ("state", state_label(*s))],
                        gauge(i64::from(*s == now)),
                    )
                })
            }),
        )?;
        family(
            e,
            "camcast_camera_capturing",
            "1 while the camera is open and delivering frames.",
            cams.iter()
                .map(|(name, hub, _)| ([("camera", *name)], gauge(i64::from(hub.capturing())))),
        )?;
        family(
            e,
            "camcast_viewers",
            "Viewers watching now, by API (streams and snapshots in progress).",
            cams.iter().flat_map(|(name, hub, _)| {
                Api::ALL.iter().map(move |api| {
                    (
                        [("camera", *name), ("api", api.as_str())],
                        gauge(hub.stats().viewers(*api)),
                    )
                })
            }),
        )?;
        family(
            e,
            "camcast_viewers_admitted",
            "Viewers admitted since start, all APIs (GetInfo viewers_total).",
            per_camera(&|_, c| c.viewers_total),
        )?;
        family(
            e,
            "camcast_viewers_refused",
            "Viewers the camera turned away, by reason (sum: GetInfo viewers_rejected).",
            cams.iter().flat_map(|(name, hub, _)| {
                ViewerRefusal::ALL.iter().map(move |r| {
                    (
                        [("camera", *name), ("reason", r.as_str())],
                        counter(hub.stats().refused[*r as usize].get()),
                    )
                })
            }),
        )?;
        family(
            e,
            "camcast_frames_sent",
            "Frames handed to viewers, by API.",
            per_api(&|a| a.frames_sent.get()),
        )?;
        family(
            e,
            "camcast_frames_skipped",
            "Frames viewers skipped (a newer frame was ready when they took their next), by API.",
            per_api(&|a| a.frames_skipped.get()),
        )?;
        family(
            e,
            "camcast_bytes_sent",
            "Bytes handed to viewers' connections, by API (HTTP: multipart parts; gRPC: encoded messages; TLS and HTTP/2 framing excluded).",
            per_api(&|a| a.bytes_sent.get()),
        )?;
        family(
            e,
            "camcast_admission_refusals",
            "Connections and requests refused before reaching a camera, by reason.",
            Refusal::ALL
                .iter()
                .map(|r| ([("reason", r.as_str())], counter(self.refusals.get(*r)))),
        )?;
        single(
            e,
            "camcast_panics",
            "Panics since start: each one is a bug in camcast (the log has it).",
            counter(crate::panics::count()),
        )?;
        let closing = self.cameras.iter().any(|c| c.hub.is_closed());
        single(
            e,
            "camcast_shutting_down",
            "1 once shutdown has begun: these are the final values.",
            gauge(i64::from(closing)),
        )?;
        family(
            e,
            "camcast_build_info",
            "Always 1; the version label says which camcast this is.",
            [([("version", env!("CARGO_PKG_VERSION"))], gauge(1))],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::hub::{HubConfig, RateCap, ViewerInfo};
    use crate::source::fake::FakeSource;
    use crate::status::StatusCell;

    fn fake_hub() -> Hub {
        let (source, _ctl) = FakeSource::new(64, 48, Duration::from_millis(2));
        Hub::new(
            Box::new(source),
            "test",
            HubConfig::default(),
            StatusCell::new(),
        )
    }

    fn viewer(api: Api) -> ViewerInfo {
        ViewerInfo {
            name: "v".into(),
            addr: None,
            api,
            max_fps: RateCap::NONE,
        }
    }

    /// N hubs give N label sets under one HELP/TYPE header per family, as the format requires.
    #[tokio::test]
    async fn every_camera_gets_its_own_label_set_under_one_header() {
        let (door, drive) = (fake_hub(), fake_hub());
        let refusals = Arc::new(Refusals::default());
        refusals.count(Refusal::Token);
        let cameras = vec![
            Camera {
                name: "door".into(),
                hub: door.clone(),
            },
            Camera {
                name: "drive \"way\"".into(),
                hub: drive.clone(),
            },
        ];
        let metrics = Metrics::new(cameras, refusals);
        let mut sub = door.connect(viewer(Api::Http)).unwrap();
        sub.next().await.unwrap();
        sub.count_bytes_sent(1234);
        let text = metrics.render();
        let lines: Vec<&str> = text.lines().collect();
        let headers = |name: &str| {
            lines
                .iter()
                .filter(|l| {
                    **l == format!("# TYPE {name} gauge") || **l == format!("# TYPE {name} counter")
                })
                .count()
        };
        assert_eq!(headers("camcast_viewers"), 1);
        assert_eq!(headers("camcast_frames_captured_total"), 1);
        assert!(lines.contains(&"camcast_viewers{camera=\"door\",api=\"http\"} 1"));
        // Label values are escaped.
        assert!(lines.contains(&"camcast_viewers{camera=\"drive \\\"way\\\"\",api=\"http\"} 0"));
        assert!(lines.contains(&"camcast_bytes_sent_total{camera=\"door\",api=\"http\"} 1234"));
        assert!(lines.contains(&"camcast_admission_refusals_total{reason=\"token\"} 1"));
        // A family's samples follow its header, every camera together.
        let first = lines
            .iter()
            .position(|l| l.starts_with("camcast_viewers{"))
            .unwrap();
        assert!(lines[first + 4].starts_with("camcast_viewers{camera=\"drive"));
        drop(sub);
        door.shutdown().await;
        drive.shutdown().await;
    }
}
