//! Everything the server does with a peer's request bytes before a handler acts on them: gRPC
//! framing and protobuf decoding (tonic's own, with the server's size limit) and the checks on
//! the decoded fields. Pure functions, shared by the handlers, the tests and the
//! `grpc_request` fuzz target, so what is fuzzed is what serves.

use bytes::Bytes;
use http_body_util::Full;
use tonic::codec::{Codec, Streaming};
use tonic::Status;

use crate::config::MAX_REQUEST_BYTES;
use crate::hub::{viewer_name, NameTooLong, RateCap};

/// Validates and sanitises a viewer name from a request (see [`viewer_name`]).
pub fn checked_name(raw: &str, max_len: usize) -> Result<String, Status> {
    viewer_name(raw, max_len).map_err(|NameTooLong { len, max }| {
        Status::invalid_argument(format!(
            "viewer name is {len} bytes; at most {max} are accepted"
        ))
    })
}

/// A viewer's requested frame-rate cap (see [`RateCap`]: the same check as HTTP's `?fps=`).
pub fn checked_max_fps(max_fps: f32) -> Result<RateCap, Status> {
    RateCap::new(f64::from(max_fps)).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Decodes a request body (5-byte gRPC frame headers and messages) exactly as the server's
/// services do: tonic's decoder with the prost codec, uncompressed, at most
/// [`MAX_REQUEST_BYTES`] per message. Returns every message in the body, or the status the
/// server would answer with.
pub async fn decode_body<M>(body: Bytes) -> Result<Vec<M>, Status>
where
    M: prost::Message + Default + Send + 'static,
{
    let mut stream = request_stream::<M, _>(Full::new(body), MAX_REQUEST_BYTES);
    let mut messages = Vec::new();
    while let Some(m) = stream.message().await? {
        messages.push(m);
    }
    Ok(messages)
}

/// The request of a server-streaming call, read from a live body as tonic's servers read it:
/// one message of at most `limit` bytes (the same decoder as [`decode_body`]), then the rest
/// of the body, whose trailers are dropped.
pub async fn decode_unary<M, B>(body: B, limit: usize) -> Result<M, Status>
where
    M: prost::Message + Default + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut stream = request_stream::<M, B>(body, limit);
    let message = stream
        .message()
        .await?
        .ok_or_else(|| Status::internal("Missing request message."))?;
    stream.trailers().await?;
    Ok(message)
}

/// The messages of a request body as tonic's servers read them: uncompressed, at most
/// `limit` bytes each (more is OUT_OF_RANGE), undecodable ones INTERNAL with prost's reason.
pub fn request_stream<M, B>(body: B, limit: usize) -> Streaming<M>
where
    M: prost::Message + Default + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut codec = tonic_prost::ProstCodec::<M, M>::default();
    Streaming::new_request(codec.decoder(), body, None, Some(limit))
}

/// Refuses a compressed request as tonic does when no compression is enabled (camcast enables
/// none: requests are a few bytes).
pub fn check_encoding(headers: &http::HeaderMap) -> Result<(), Status> {
    match headers.get("grpc-encoding") {
        None => Ok(()),
        Some(v) if v == "identity" => Ok(()),
        Some(v) => {
            let name = String::from_utf8_lossy(v.as_bytes());
            let mut status = Status::unimplemented(format!(
                "Content is compressed with `{name}` which isn't supported"
            ));
            status.metadata_mut().insert(
                "grpc-accept-encoding",
                tonic::metadata::MetadataValue::from_static("identity"),
            );
            Err(status)
        }
    }
}

/// A body of one uncompressed gRPC message: the 5-byte header, then the encoded message.
pub fn frame(message: &impl prost::Message) -> Bytes {
    let encoded = message.encode_to_vec();
    let mut out = Vec::with_capacity(5 + encoded.len());
    out.push(0); // not compressed
    out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    out.extend_from_slice(&encoded);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use futures_util::FutureExt;
    use tonic::Code;

    fn decode<M: prost::Message + Default + Send + 'static>(body: &[u8]) -> Result<Vec<M>, Status> {
        decode_body(Bytes::copy_from_slice(body))
            .now_or_never()
            .expect("an in-memory body decodes without waiting")
    }

    #[test]
    fn framed_requests_round_trip() {
        let req = pb::v1::StreamRequest {
            viewer_name: "kitchen".into(),
            max_fps: 5.0,
            camera: "door".into(),
        };
        let mut body = frame(&req).to_vec();
        let decoded = decode::<pb::v1::StreamRequest>(&body).unwrap();
        assert_eq!(decoded, std::slice::from_ref(&req));
        body.extend_from_slice(&frame(&req));
        assert_eq!(decode::<pb::v1::StreamRequest>(&body).unwrap().len(), 2);
        assert!(decode::<pb::v1::StreamRequest>(&[]).unwrap().is_empty());
    }

    #[test]
    fn bad_framing_gets_a_status_not_a_panic() {
        // Header cut short, message cut short, compressed flag without compression, oversized.
        let cases: [(&[u8], Code); 4] = [
            (&[0, 0, 0], Code::Internal),
            (&[0, 0, 0, 0, 9, 1, 2], Code::Internal),
            (&[1, 0, 0, 0, 0], Code::Internal),
            (&[0, 0, 1, 0, 0], Code::OutOfRange),
        ];
        for (body, code) in cases {
            let err = decode::<pb::tutorial::ClientName>(body).unwrap_err();
            assert_eq!(err.code(), code, "{body:?}: {err}");
        }
        let garbage = [0, 0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(decode::<pb::tutorial::ClientName>(&garbage).is_err());
    }

    #[test]
    fn fields_are_checked() {
        assert_eq!(checked_name("a\nb", 8).unwrap(), "a\u{FFFD}b");
        assert_eq!(
            checked_name("too long", 3).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(checked_max_fps(0.0).unwrap(), RateCap::NONE);
        assert_eq!(checked_max_fps(-0.0).unwrap(), RateCap::NONE);
        assert_eq!(checked_max_fps(2.5).unwrap().fps(), 2.5);
        assert_eq!(checked_max_fps(0.01).unwrap().fps(), 0.01);
        assert_eq!(checked_max_fps(1000.0).unwrap().fps(), 1000.0);
        for bad in [
            f32::NAN,
            f32::INFINITY,
            -1.0,
            f32::NEG_INFINITY,
            1e-30,
            f32::MIN_POSITIVE / 2.0,
            0.009,
            1000.5,
            f32::MAX,
        ] {
            assert_eq!(
                checked_max_fps(bad).unwrap_err().code(),
                Code::InvalidArgument
            );
        }
    }
}
