//! Everything but the live-frame streams (Snapshot, GetInfo, health with its Watch stream,
//! reflection v1/v1alpha which stream both ways, unknown methods) goes to tonic's services,
//! behind the same [`Gate`](super::gate::Gate) as before. This pumps one h2 stream into a
//! tonic request and the response back, bodies and trailers both ways, within the peer's
//! flow-control window.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::message::{chunk, Chunk};
use crate::admission::ConnInfo;

/// What a bridged request is served by: tonic's routes behind the gate.
pub trait TonicService:
    tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static
{
}

impl<S> TonicService for S where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static
{
}

/// Serves one request with `service`.
pub async fn serve(
    req: http::Request<RecvStream>,
    respond: SendResponse<Chunk>,
    mut service: impl TonicService,
    conn: ConnInfo,
) {
    let (mut parts, recv) = req.into_parts();
    // What tonic's own server would have put there: the connection's facts.
    parts.extensions.insert(conn);
    let req = http::Request::from_parts(parts, tonic::body::Body::new(RecvBody::new(recv)));
    let Ok(()) = poll_fn(|cx| service.poll_ready(cx)).await;
    let Ok(resp) = service.call(req).await;
    respond_with(respond, resp).await;
}

/// Sends a tonic response: headers, then the body within the peer's window, then trailers.
pub async fn respond_with(
    mut respond: SendResponse<Chunk>,
    resp: http::Response<tonic::body::Body>,
) {
    let (parts, body) = resp.into_parts();
    let end = body.is_end_stream();
    let send = match respond.send_response(http::Response::from_parts(parts, ()), end) {
        Ok(send) => send,
        Err(e) => {
            tracing::debug!("response headers not sent: {e}");
            return;
        }
    };
    if !end {
        pump(body, send).await;
    }
}

async fn pump(mut body: tonic::body::Body, mut send: SendStream<Chunk>) {
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = poll_fn(|cx| send.poll_reset(cx)) => return, // the peer cancelled
        };
        match frame {
            None => {
                let _ = send.send_data(chunk(Bytes::new()), true);
                return;
            }
            Some(Err(status)) => {
                tracing::debug!("response body failed: {status}");
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if send_within_window(&mut send, data).await.is_err() {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = send.send_trailers(trailers);
                    }
                    return;
                }
            },
        }
    }
}

/// Sends `data` as the peer's window allows, so a peer that does not read makes h2 buffer
/// nothing beyond what its window holds.
async fn send_within_window(send: &mut SendStream<Chunk>, mut data: Bytes) -> Result<(), ()> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let mut capacity = send.capacity();
        while capacity == 0 {
            match poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(n)) => capacity = n,
                _ => return Err(()),
            }
        }
        let n = capacity.min(data.len());
        send.send_data(chunk(data.split_to(n)), false)
            .map_err(|_| ())?;
    }
    Ok(())
}

/// An h2 request body as an `http_body::Body`, returning flow-control credit as it is read.
struct RecvBody {
    recv: RecvStream,
    data_done: bool,
}

impl RecvBody {
    fn new(recv: RecvStream) -> Self {
        RecvBody {
            recv,
            data_done: false,
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match std::task::ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match std::task::ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// The request body of a live-frame stream, for the shared decoder.
pub fn request_body(recv: RecvStream) -> impl Body<Data = Bytes, Error = h2::Error> + Send {
    RecvBody::new(recv)
}
