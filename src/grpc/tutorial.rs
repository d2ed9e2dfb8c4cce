//! The tutorial's `WebcamStreaming` service, unchanged on the wire: a stream of bare JPEGs.

use futures_util::stream;
use tonic::{Request, Response, Status};

use super::request::checked_name;
use super::{FrameStream, GrpcSettings};
use crate::hub::{Api, Hub, RateCap, ViewerInfo};
use crate::pb::tutorial::{webcam_streaming_server::WebcamStreaming, CaptureImage, ClientName};

pub struct TutorialService {
    hub: Hub,
    settings: GrpcSettings,
}

impl TutorialService {
    pub fn new(hub: Hub, settings: GrpcSettings) -> Self {
        TutorialService { hub, settings }
    }
}

#[tonic::async_trait]
impl WebcamStreaming for TutorialService {
    type StartWebcamStreamingStream = FrameStream<CaptureImage>;

    async fn start_webcam_streaming(
        &self,
        request: Request<ClientName>,
    ) -> Result<Response<Self::StartWebcamStreamingStream>, Status> {
        let addr = crate::admission::peer_addr(&request);
        let name = checked_name(&request.get_ref().client_name, self.settings.max_name_len)?;
        let sub = self.hub.connect(ViewerInfo {
            name,
            addr,
            api: Api::Tutorial,
            max_fps: RateCap::NONE,
        })?;
        let frames = stream::unfold(sub, |mut sub| async move {
            let d = sub.next().await?;
            let image = CaptureImage {
                image_bytes: d.frame.jpeg,
            };
            sub.count_bytes_sent(prost::Message::encoded_len(&image));
            Some((Ok(image), sub))
        });
        Ok(Response::new(Box::pin(frames)))
    }
}
