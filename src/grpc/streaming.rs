//! The two live-frame methods, served on h2 directly so the sender sees the viewer's credits:
//! the tutorial API's `StartWebcamStreaming` and `camcast.v1.Camera/StreamFrames`.
//!
//! Each stream takes the newest frame from the hub only when its [`Pacer`] says the viewer is
//! ready for one, so a slow viewer skips frames at the hub (counted in `skipped`) instead of
//! queueing them in its HTTP/2 window. Messages are a small prefix and the hub's shared JPEG
//! ([`message`]). Refusals are Trailers-Only responses with the same statuses and words as
//! tonic's services gave; the token check and the open-request count are the gate's own.

use std::future::poll_fn;
use std::sync::Arc;

use bytes::Buf;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::credit::{Claim, Pacer, Signalling};
use super::message::{self, Chunk};
use super::request::{check_encoding, checked_max_fps, checked_name, decode_unary};
use super::{bridge, gate, GrpcSettings};
use crate::admission::ConnInfo;
use crate::hub::{Api, Hub, RateCap, Subscription, ViewerInfo};
use crate::pb;
use crate::protection::Protection;

pub const TUTORIAL_PATH: &str = "/WebcamStreaming/StartWebcamStreaming";
pub const V1_PATH: &str = "/camcast.v1.Camera/StreamFrames";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    Tutorial,
    V1,
}

impl Contract {
    /// The contract a request path is served by here, if any.
    pub fn for_path(path: &str, tutorial_api: bool) -> Option<Contract> {
        match path {
            TUTORIAL_PATH if tutorial_api => Some(Contract::Tutorial),
            V1_PATH => Some(Contract::V1),
            _ => None,
        }
    }
}

/// What every stream of one server shares.
pub struct Streams {
    pub hub: Hub,
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
    mut respond: SendResponse<Chunk>,
    claim: Claim,
    streams: Arc<Streams>,
    conn: Arc<Conn>,
) {
    let (parts, recv) = req.into_parts();
    let tokens = streams.protection.tokens.as_ref();
    let path = parts.uri.path();
    if let Err(status) = gate::check_token(tokens, path, &parts.headers, Some(&conn.info)) {
        return refuse(respond, status);
    }
    // Open until this function returns: the connection is not idle while a viewer watches.
    let _open = conn.info.begin_request();
    let sub = tokio::select! {
        admitted = admit(contract, &parts.headers, recv, &streams, &conn.info) => admitted,
        () = conn.closed.cancelled() => return,
    };
    let sub = match sub {
        Ok(sub) => sub,
        Err(status) => return refuse(respond, status),
    };
    let ok = http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(())
        .expect("static headers are valid");
    let Ok(mut send) = respond.send_response(ok, false) else {
        return;
    };
    let mut pacer = Pacer::new(claim);
    let end = send_frames(
        contract,
        sub,
        &mut send,
        &mut pacer,
        &streams.hub,
        &conn.closed,
    )
    .await;
    tracing::debug!(peer = %conn.info.remote, signalling = ?pacer.signalling(),
        uncredited = pacer.uncredited(), "live stream ended");
    if let Some(status) = end {
        let mut trailers = http::HeaderMap::new();
        if status.add_header(&mut trailers).is_ok() {
            let _ = send.send_trailers(trailers);
        }
    }
}

/// Reads and checks the request and admits the viewer at the hub.
async fn admit(
    contract: Contract,
    headers: &http::HeaderMap,
    recv: RecvStream,
    streams: &Streams,
    info: &ConnInfo,
) -> Result<Subscription, Status> {
    check_encoding(headers)?;
    let s = &streams.settings;
    let body = bridge::request_body(recv);
    let viewer = match contract {
        Contract::Tutorial => {
            let req: pb::tutorial::ClientName = decode_unary(body, s.max_request_bytes).await?;
            ViewerInfo {
                name: checked_name(&req.client_name, s.max_name_len)?,
                addr: Some(info.remote),
                api: Api::Tutorial,
                max_fps: RateCap::NONE,
            }
        }
        Contract::V1 => {
            let req: pb::v1::StreamRequest = decode_unary(body, s.max_request_bytes).await?;
            let name = checked_name(&req.viewer_name, s.max_name_len)?;
            ViewerInfo {
                name,
                addr: Some(info.remote),
                api: Api::V1,
                max_fps: checked_max_fps(req.max_fps)?,
            }
        }
    };
    Ok(streams.hub.connect(viewer)?)
}

/// Sends the newest frame each time the viewer is ready for one. Returns the final status,
/// or `None` if the viewer or its connection went away.
async fn send_frames(
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
            Contract::V1 => message::v1(&d.frame, d.skipped),
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
        // What /metrics counts for gRPC: the protobuf message, without its 5-byte header.
        sub.count_bytes_sent(len - message::GRPC_HEADER);
    }
}

/// A Trailers-Only response: the status in the headers, no body.
fn refuse(mut respond: SendResponse<Chunk>, status: Status) {
    let resp = status.into_http::<()>();
    let _ = respond.send_response(resp, true);
}
