//! Fuzzes what the server does with a peer's request bytes: arbitrary bytes decoded as every
//! request message of both APIs, both bare and as a gRPC request body (5-byte frame headers,
//! tonic's decoder, the server's size limit), and the server's checks applied to whatever
//! decodes. Nothing may panic; a decoded message must re-encode to itself; the checks must
//! hold their promises (a name within the limit is accepted and loggable, a rate accepted is
//! finite and not negative).
#![no_main]

use bytes::Bytes;
use camcast::grpc::request::{checked_max_fps, checked_name, decode_body, frame};
use camcast::pb;
use futures_util::FutureExt;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The name limit the checks run with: the default, and a tiny one to reach the error path.
const NAME_LIMITS: [usize; 2] = [64, 3];

fuzz_target!(|data: &[u8]| {
    each_request::<pb::tutorial::ClientName>(data, |m| check_name(&m.client_name));
    each_request::<pb::v1::StreamRequest>(data, |m| {
        check_name(&m.viewer_name);
        check_rate(m.max_fps);
    });
    each_request::<pb::v1::PullRequest>(data, |m| {
        check_name(&m.viewer_name);
        check_rate(m.max_fps);
    });
    each_request::<pb::v1::SnapshotRequest>(data, |m| check_name(&m.viewer_name));
    each_request::<pb::v1::GetInfoRequest>(data, |_| {});
});

/// Decodes `data` as a bare `M` and as a request body of `M`s; runs `check` on each result.
fn each_request<M>(data: &[u8], check: impl Fn(&M))
where
    M: Message + Default + Send + 'static,
{
    if let Ok(m) = M::decode(data) {
        round_trips(&m);
        check(&m);
    }
    let decoded = decode_body::<M>(Bytes::copy_from_slice(data))
        .now_or_never()
        .expect("an in-memory body decodes without waiting");
    for m in decoded.into_iter().flatten() {
        round_trips(&m);
        check(&m);
    }
}

/// Compared as encodings: a NaN rate is not equal to itself, but encodes the same.
fn round_trips<M: Message + Default + Send + 'static>(m: &M) {
    let bytes = m.encode_to_vec();
    let again = M::decode(bytes.as_slice()).expect("re-encoded message decodes");
    assert_eq!(again.encode_to_vec(), bytes);
    let framed = decode_body::<M>(frame(m)).now_or_never().unwrap().unwrap();
    assert_eq!(framed.len(), 1);
    assert_eq!(framed[0].encode_to_vec(), bytes);
}

fn check_name(raw: &str) {
    for max in NAME_LIMITS {
        match checked_name(raw, max) {
            Ok(name) => {
                assert!(raw.len() <= max);
                assert!(!name.is_empty() && !name.chars().any(char::is_control));
            }
            Err(status) => {
                assert!(raw.len() > max);
                assert_eq!(status.code(), tonic::Code::InvalidArgument);
            }
        }
    }
}

fn check_rate(max_fps: f32) {
    match checked_max_fps(max_fps) {
        Ok(r) => {
            let fps = r.fps();
            assert!(fps == 0.0 || (0.01..=1000.0).contains(&fps));
            assert_eq!(fps, max_fps.abs());
        }
        Err(status) => {
            assert!(!(max_fps == 0.0 || (0.01..=1000.0).contains(&max_fps)));
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
    }
}
