//! The `camcast.v1.Camera` service: frames with metadata, snapshots and server info.

use tonic::{Request, Response, Status, Streaming};

use super::request::checked_name;
use super::GrpcSettings;
use crate::cameras::Cameras;
use crate::frame::{Frame as HubFrame, FrameOrigin};
use crate::hub::{Api, HubReport, RateCap, ViewerInfo, ViewerReport};
use crate::pb::v1::{self as pb, camera_server::Camera};
use crate::status::State;

pub struct CameraService {
    cameras: Cameras,
    settings: GrpcSettings,
}

impl CameraService {
    pub fn new(cameras: Cameras, settings: GrpcSettings) -> Self {
        CameraService { cameras, settings }
    }
}

/// The live-frame methods' response type in the generated trait; they are never served here.
type NotServedHere = futures_util::stream::Empty<Result<pb::Frame, Status>>;

#[tonic::async_trait]
impl Camera for CameraService {
    type StreamFramesStream = NotServedHere;
    type PullFramesStream = NotServedHere;

    /// Unreachable: `grpc::server` hands the live-frame methods to `grpc::streaming` before a
    /// request could reach tonic (tonic's server hides the credits they are paced by). The
    /// generated trait still requires them.
    async fn stream_frames(
        &self,
        _: Request<pb::StreamRequest>,
    ) -> Result<Response<NotServedHere>, Status> {
        Err(Status::internal("served by grpc::streaming"))
    }

    /// Unreachable, as `stream_frames`.
    async fn pull_frames(
        &self,
        _: Request<Streaming<pb::PullRequest>>,
    ) -> Result<Response<NotServedHere>, Status> {
        Err(Status::internal("served by grpc::streaming"))
    }

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::Frame>, Status> {
        let addr = crate::admission::peer_addr(&request);
        let hub = &self.cameras.get(&request.get_ref().camera)?.hub;
        let name = checked_name(&request.get_ref().viewer_name, self.settings.max_name_len)?;
        let info = ViewerInfo {
            name,
            addr,
            api: Api::Snapshot,
            max_fps: RateCap::NONE,
        };
        let frame = hub.snapshot(info, self.settings.snapshot_timeout).await?;
        let frame = to_pb(frame, 0);
        let bytes = prost::Message::encoded_len(&frame);
        hub.stats().bytes_sent(Api::Snapshot, bytes);
        Ok(Response::new(frame))
    }

    async fn get_info(
        &self,
        request: Request<pb::GetInfoRequest>,
    ) -> Result<Response<pb::CameraInfo>, Status> {
        let asked = self.cameras.get(&request.get_ref().camera)?;
        let default = self.cameras.default_camera().name.clone();
        let (report, each) = self.cameras.reports_for(asked);
        let cameras = each
            .into_iter()
            .map(|(c, r)| summary_to_pb(c.name.as_str(), c.name == default, r))
            .collect();
        let mut info = info_to_pb(report);
        info.camera = asked.name.to_string();
        info.cameras = cameras;
        Ok(Response::new(info))
    }
}

fn to_pb(f: HubFrame, skipped: u64) -> pb::Frame {
    pb::Frame {
        capture_time_unix_us: f.captured_unix_us(),
        jpeg: f.jpeg,
        seq: f.seq,
        width: f.width,
        height: f.height,
        skipped,
        origin: match f.origin {
            FrameOrigin::Camera => pb::FrameOrigin::Camera,
            FrameOrigin::Encoded => pb::FrameOrigin::Encoded,
        } as i32,
    }
}

fn state_to_pb(state: State) -> pb::State {
    match state {
        State::Starting => pb::State::Starting,
        State::WaitingForCamera => pb::State::WaitingForCamera,
        State::Ready => pb::State::Ready,
        State::Streaming => pb::State::Streaming,
        State::Fault => pb::State::Fault,
    }
}

fn mode_to_pb(m: crate::source::Mode) -> pb::Mode {
    pb::Mode {
        width: m.width,
        height: m.height,
        fps: m.fps,
        pixel_format: m.pixel_format,
    }
}

fn viewer_to_pb(v: ViewerReport) -> pb::Viewer {
    pb::Viewer {
        name: v.info.name,
        address: v.info.addr.map(|a| a.to_string()).unwrap_or_default(),
        api: v.info.api.as_str().into(),
        frames_sent: v.frames_sent,
        frames_skipped: v.frames_skipped,
        connected_ms: v.connected_for.as_millis() as u64,
        max_fps: v.info.max_fps.fps(),
    }
}

/// One camera's line in GetInfo's list.
fn summary_to_pb(name: &str, is_default: bool, r: HubReport) -> pb::CameraSummary {
    pb::CameraSummary {
        name: name.into(),
        is_default,
        source: r.source,
        mode: r.mode.map(mode_to_pb),
        state: state_to_pb(r.status.state) as i32,
        state_detail: r.status.detail,
        capturing: r.capturing,
        viewers: r.viewers.into_iter().map(viewer_to_pb).collect(),
    }
}

fn info_to_pb(r: HubReport) -> pb::CameraInfo {
    pb::CameraInfo {
        source: r.source,
        source_reason: r.source_reason,
        mode: r.mode.map(mode_to_pb),
        state: state_to_pb(r.status.state) as i32,
        state_detail: r.status.detail,
        capturing: r.capturing,
        viewers: r.viewers.into_iter().map(viewer_to_pb).collect(),
        uptime_ms: r.uptime.as_millis() as u64,
        counters: Some(pb::Counters {
            frames_captured: r.counters.frames_captured,
            frames_dropped: r.counters.frames_dropped,
            capture_starts: r.counters.capture_starts,
            capture_errors: r.counters.capture_errors,
            viewers_total: r.counters.viewers_total,
            viewers_rejected: r.counters.viewers_rejected,
            panics: crate::panics::count(),
        }),
        version: env!("CARGO_PKG_VERSION").into(),
        camera: String::new(),
        cameras: Vec::new(),
    }
}
