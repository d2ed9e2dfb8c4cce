//! The three live-frame methods, served on h2 directly: the tutorial API's
//! `StartWebcamStreaming` and `camcast.v1.Camera/StreamFrames`, paced by the viewer's HTTP/2
//! credits, and `camcast.v1.Camera/PullFrames`, paced by the viewer's own requests.
//!
//! A streamed viewer takes the newest frame from the hub only when its [`Pacer`] says the
//! viewer is ready for one; a pulling viewer, once per request. Either way a slow viewer skips
//! frames at the hub (counted in `skipped`) instead of queueing them in its HTTP/2 window.
//! Messages are a small prefix and the hub's shared JPEG ([`message`]). Refusals are
//! Trailers-Only responses with the same statuses and words as tonic's services gave; the
//! token check and the open-request count are the gate's own.

use std::future::poll_fn;
use std::sync::Arc;

use bytes::Buf;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::credit::{Claim, Pacer, Signalling};
use super::message::{self, Chunk};
use super::request::{check_encoding, checked_max_fps, checked_name, decode_unary, request_stream};
use super::{bridge, gate, GrpcSettings};
use crate::admission::ConnInfo;
use crate::cameras::Cameras;
use crate::hub::{Api, Hub, RateCap, Subscription, ViewerInfo};
use crate::pb;
use crate::protection::Protection;

pub const TUTORIAL_PATH: &str = "/WebcamStreaming/StartWebcamStreaming";
pub const V1_PATH: &str = "/camcast.v1.Camera/StreamFrames";
pub const PULL_PATH: &str = "/camcast.v1.Camera/PullFrames";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    Tutorial,
    V1,
    /// camcast.v1's PullFrames: a frame per request.
    Pull,
}

impl Contract {
    /// The contract a request path is served by here, if any.
    pub fn for_path(path: &str, tutorial_api: bool) -> Option<Contract> {
        match path {
            TUTORIAL_PATH if tutorial_api => Some(Contract::Tutorial),
            V1_PATH => Some(Contract::V1),
            PULL_PATH => Some(Contract::Pull),
            _ => None,
        }
    }
}

/// What every stream of one server shares.
pub struct Streams {
    pub cameras: Cameras,
    pub settings: GrpcSettings,
    /// Admission, TLS and tokens, shared with the server's other ports.
    pub protection: Protection,
}

/// One connection's facts for its streams.
pub struct Conn {
    pub info: ConnInfo,
    /// Cancelled when the connection is gone: its streams stop at once.
    pub closed: CancellationToken,
}

/// Serves one live-frame stream from request to final status.
pub async fn serve(
    contract: Contract,
    req: http::Request<RecvStream>,
    respond: SendResponse<Chunk>,
    claim: Claim,
    streams: Arc<Streams>,
    conn: Arc<Conn>,
) {
    let (parts, recv) = req.into_parts();
    let tokens = streams.protection.tokens.as_ref();
    let path = parts.uri.path();
    if let Err(status) = gate::check_token(tokens, path, &parts.headers, Some(&conn.info)) {
        return trailers_only(respond, status);
    }
    // Open until this function returns: the connection is not idle while a viewer watches.
    let _open = conn.info.begin_request();
    let admitted = tokio::select! {
        admitted = admit(contract, &parts.headers, recv, &streams, &conn.info) => admitted,
        () = conn.closed.cancelled() => return,
    };
    let (hub, sub, requests) = match admitted {
        Ok(admitted) => admitted,
        Err(status) => return trailers_only(respond, status),
    };
    let Some(mut send) = start_response(respond) else {
        return;
    };
    let (hub, closed) = (&hub, &conn.closed);
    let end = match requests {
        Some(requests) => {
            drop(claim); // one frame per request: the credits say nothing more
            send_pulled(sub, requests, &mut send, hub, closed).await
        }
        None => {
            let mut pacer = Pacer::new(claim);
            let end = send_paced(contract, sub, &mut send, &mut pacer, hub, closed).await;
            tracing::debug!(signalling = ?pacer.signalling(), uncredited = pacer.uncredited(),
                "live stream ended");
            end
        }
    };
    if let Some(status) = end {
        let mut trailers = http::HeaderMap::new();
        if status.add_header(&mut trailers).is_ok() {
            let _ = send.send_trailers(trailers);
        }
    }
}

/// Reads and checks the request (a pulling viewer's first request) and admits the viewer at
/// the hub. For PullFrames it also returns the stream of the viewer's later requests; a
/// viewer that closed its side without asking gets an OK status and no frame.
async fn admit(
    contract: Contract,
    headers: &http::HeaderMap,
    recv: RecvStream,
    streams: &Streams,
    info: &ConnInfo,
) -> Result<(Hub, Subscription, Option<Streaming<pb::v1::PullRequest>>), Status> {
    check_encoding(headers)?;
    let s = &streams.settings;
    let body = bridge::request_body(recv);
    let viewer = |name: &str, api, max_fps| -> Result<ViewerInfo, Status> {
        Ok(ViewerInfo {
            name: checked_name(name, s.max_name_len)?,
            addr: Some(info.remote),
            api,
            max_fps,
        })
    };
    let cameras = &streams.cameras;
    // The tutorial API has no camera field: it serves the default camera.
    let (hub, viewer, requests) = match contract {
        Contract::Tutorial => {
            let req: pb::tutorial::ClientName = decode_unary(body, s.max_request_bytes).await?;
            (
                &cameras.default_camera().hub,
                viewer(&req.client_name, Api::Tutorial, RateCap::NONE)?,
                None,
            )
        }
        Contract::V1 => {
            let req: pb::v1::StreamRequest = decode_unary(body, s.max_request_bytes).await?;
            let hub = &cameras.get(&req.camera)?.hub;
            let max_fps = checked_max_fps(req.max_fps)?;
            (hub, viewer(&req.viewer_name, Api::V1, max_fps)?, None)
        }
        Contract::Pull => {
            let mut requests = request_stream::<pb::v1::PullRequest, _>(body, s.max_request_bytes);
            let Some(first) = requests.message().await? else {
                return Err(Status::ok(""));
            };
            let hub = &cameras.get(&first.camera)?.hub;
            let max_fps = checked_max_fps(first.max_fps)?;
            (
                hub,
                viewer(&first.viewer_name, Api::V1, max_fps)?,
                Some(requests),
            )
        }
    };
    Ok((hub.clone(), hub.connect(viewer)?, requests))
}

/// Sends the response headers of a stream that will carry frames.
fn start_response(mut respond: SendResponse<Chunk>) -> Option<SendStream<Chunk>> {
    let ok = http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(())
        .expect("static headers are valid");
    respond.send_response(ok, false).ok()
}

/// Sends the newest frame each time the viewer is ready for one, as its credits say. Returns
/// the final status, or `None` if the viewer or its connection went away.
async fn send_paced(
    contract: Contract,
    mut sub: Subscription,
    send: &mut SendStream<Chunk>,
    pacer: &mut Pacer,
    hub: &Hub,
    closed: &CancellationToken,
) -> Option<Status> {
    loop {
        tokio::select! {
            biased;
            () = closed.cancelled() => return None,
            _ = poll_fn(|cx| send.poll_reset(cx)) => return None,
            () = hub.closed() => return Some(Status::ok("")),
            () = pacer.ready() => {}
        }
        let delivery = tokio::select! {
            biased;
            () = closed.cancelled() => return None,
            _ = poll_fn(|cx| send.poll_reset(cx)) => return None,
            d = sub.next() => d,
        };
        let Some(d) = delivery else {
            return Some(Status::ok("")); // the hub is shutting down
        };
        let built = match contract {
            Contract::Tutorial => message::tutorial(d.frame.jpeg),
            Contract::V1 | Contract::Pull => message::v1(&d.frame, d.skipped),
        };
        let msg = match built {
            Ok(msg) => msg,
            Err(status) => return Some(status),
        };
        let len = msg.remaining();
        if pacer.signalling() == Signalling::Pull {
            let (head, last) = message::split_last_byte(msg);
            send.send_data(head, false).ok()?;
            send.send_data(last, false).ok()?;
        } else {
            send.send_data(msg, false).ok()?;
        }
        pacer.sent(len);
        count_sent(&sub, len);
    }
}

/// Sends the newest frame for each request of a pulling viewer: one frame per request at
/// most, and requests that arrive while one is unanswered change nothing, so the viewer never
/// has more than the one frame it asked for in flight. Ends with OK once the viewer has
/// closed its side and its last request is answered.
async fn send_pulled(
    mut sub: Subscription,
    mut requests: Streaming<pb::v1::PullRequest>,
    send: &mut SendStream<Chunk>,
    hub: &Hub,
    closed: &CancellationToken,
) -> Option<Status> {
    let mut asked = true; // the first request
    let mut asking = true; // the viewer's side is open
    while asked || asking {
        tokio::select! {
            biased;
            () = closed.cancelled() => return None,
            _ = poll_fn(|cx| send.poll_reset(cx)) => return None,
            () = hub.closed() => return Some(Status::ok("")),
            request = requests.message(), if asking => match request {
                Ok(Some(_)) => asked = true,
                Ok(None) => asking = false,
                Err(status) => return Some(status),
            },
            delivery = sub.next(), if asked => {
                let Some(d) = delivery else {
                    return Some(Status::ok("")); // the hub is shutting down
                };
                let msg = match message::v1(&d.frame, d.skipped) {
                    Ok(msg) => msg,
                    Err(status) => return Some(status),
                };
                let len = msg.remaining();
                send.send_data(msg, false).ok()?;
                count_sent(&sub, len);
                asked = false;
            }
        }
    }
    Some(Status::ok(""))
}

/// What /metrics counts for a gRPC frame: the protobuf message, without its 5-byte header.
fn count_sent(sub: &Subscription, message_len: usize) {
    sub.count_bytes_sent(message_len - message::GRPC_HEADER);
}

/// A Trailers-Only response: the status in the headers, no body.
fn trailers_only(mut respond: SendResponse<Chunk>, status: Status) {
    let resp = status.into_http::<()>();
    let _ = respond.send_response(resp, true);
}
