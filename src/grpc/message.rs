//! Streaming messages built without copying the JPEG: a small prefix (the 5-byte gRPC message
//! header, the small protobuf fields, then the JPEG field's key and length) followed by the
//! hub's shared `Bytes`. h2 writes a DATA payload of 256 bytes or more straight from these
//! buffers with vectored I/O, so each viewer's message costs one small allocation, never a
//! copy of the picture. (h2 coalesces up to 256 bytes of each DATA frame into its own buffer
//! to save a syscall, and TLS encrypts into records: those are the only copies.)
//!
//! Protobuf lets fields appear in any order, so `camcast.v1.Frame` puts `jpeg` (field 1)
//! last; decoders see the same message prost would have produced. The tutorial API's
//! `CaptureImage` has only that field, so its bytes are exactly prost's.

use bytes::buf::Chain;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;
use tonic::Status;

use crate::config::MAX_FRAME_BYTES;
use crate::frame::{Frame as HubFrame, FrameOrigin};
use crate::pb;

/// A gRPC message header: the compressed flag and the 4-byte length.
pub const GRPC_HEADER: usize = 5;

/// What goes into one DATA payload: a prefix and a shared buffer (either may be empty).
pub type Chunk = Chain<Bytes, Bytes>;

/// A payload from one buffer.
pub fn chunk(data: Bytes) -> Chunk {
    Bytes::new().chain(data)
}

/// Splits a message before its last byte, to go as two DATA frames.
///
/// For gRPC's C core: it counts a DATA frame as received when the frame's header arrives, but
/// works out what its reader still needs from the bytes it has parsed. When a message's last
/// DATA frame is split across two socket reads, the credit it writes after the message is
/// complete still counts the second read's bytes as needed: U drops below zero by that much
/// while the reader is busy, and that reader's next wait shows no credit at all. A one-byte
/// last frame cannot be split, and its arrival clears the need (docs/flow-control.md).
pub fn split_last_byte(msg: Chunk) -> (Chunk, Chunk) {
    let (mut prefix, mut jpeg) = msg.into_inner();
    let last = if jpeg.is_empty() {
        prefix.split_off(prefix.len() - 1)
    } else {
        jpeg.split_off(jpeg.len() - 1)
    };
    (prefix.chain(jpeg), chunk(last))
}

/// The protobuf field number of `jpeg` / `imageBytes` in both contracts.
const JPEG_FIELD: u32 = 1;

/// A tutorial API `CaptureImage` message.
pub fn tutorial(jpeg: Bytes) -> Result<Chunk, Status> {
    framed(BytesMut::new(), jpeg)
}

/// A `camcast.v1.Frame` message for a frame this viewer reached after skipping `skipped`.
pub fn v1(frame: &HubFrame, skipped: u64) -> Result<Chunk, Status> {
    let small = pb::v1::Frame {
        jpeg: Bytes::new(),
        seq: frame.seq,
        capture_time_unix_us: frame.captured_unix_us(),
        width: frame.width,
        height: frame.height,
        skipped,
        origin: match frame.origin {
            FrameOrigin::Camera => pb::v1::FrameOrigin::Camera,
            FrameOrigin::Encoded => pb::v1::FrameOrigin::Encoded,
        } as i32,
    };
    let mut fields = BytesMut::with_capacity(small.encoded_len() + 16);
    small.encode(&mut fields).expect("BytesMut grows as needed");
    framed(fields, frame.jpeg.clone())
}

/// Header + `fields` + the JPEG field (left out when empty, as proto3 does).
fn framed(fields: BytesMut, jpeg: Bytes) -> Result<Chunk, Status> {
    let jpeg_field = if jpeg.is_empty() {
        0
    } else {
        key_len(JPEG_FIELD) + encoded_len_varint(jpeg.len() as u64) + jpeg.len()
    };
    let len = fields.len() + jpeg_field;
    if len > MAX_FRAME_BYTES {
        // tonic's words for the same refusal.
        return Err(Status::out_of_range(format!(
            "Error, encoded message length too large: found {len} bytes, the limit is: {MAX_FRAME_BYTES} bytes"
        )));
    }
    let mut prefix = BytesMut::with_capacity(GRPC_HEADER + fields.len() + 16);
    prefix.put_u8(0); // not compressed
    prefix.put_u32(len as u32);
    prefix.put_slice(&fields);
    if !jpeg.is_empty() {
        encode_key(JPEG_FIELD, WireType::LengthDelimited, &mut prefix);
        encode_varint(jpeg.len() as u64, &mut prefix);
    }
    Ok(prefix.freeze().chain(jpeg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::CapturedFrame;
    use std::time::{Duration, UNIX_EPOCH};

    fn flat(c: &Chunk) -> Vec<u8> {
        [c.first_ref().as_ref(), c.last_ref().as_ref()].concat()
    }

    fn hub_frame(jpeg: Bytes, micros: i64) -> HubFrame {
        let at = if micros >= 0 {
            UNIX_EPOCH + Duration::from_micros(micros as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
        };
        HubFrame::new(
            CapturedFrame {
                jpeg,
                captured_at: at,
                width: 1920,
                height: 1080,
                origin: FrameOrigin::Camera,
                encode_time: None,
            },
            123_456_789,
        )
    }

    #[test]
    fn tutorial_messages_are_byte_for_byte_what_prost_and_tonic_send() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 200_000] {
            let jpeg = Bytes::from(vec![0xab; len]);
            let ours = flat(&tutorial(jpeg.clone()).unwrap());
            let prost =
                crate::grpc::request::frame(&pb::tutorial::CaptureImage { image_bytes: jpeg });
            assert_eq!(ours, prost.to_vec(), "{len} bytes");
        }
    }

    #[test]
    fn v1_messages_decode_to_the_frame_prost_would_send() {
        for (len, micros, skipped) in [(0, 0, 0), (5000, 1_700_000_000_123_456, 7), (200, -5, 0)] {
            let f = hub_frame(Bytes::from(vec![7u8; len]), micros);
            let wire = flat(&v1(&f, skipped).unwrap());
            let body = u32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]) as usize;
            assert_eq!((wire[0], body), (0, wire.len() - 5));
            let decoded = pb::v1::Frame::decode(&wire[5..]).unwrap();
            let expected = pb::v1::Frame {
                jpeg: f.jpeg.clone(),
                seq: f.seq,
                capture_time_unix_us: micros,
                width: 1920,
                height: 1080,
                skipped,
                origin: pb::v1::FrameOrigin::Camera as i32,
            };
            assert_eq!(decoded, expected);
            assert_eq!(
                body,
                expected.encoded_len(),
                "same length as prost's encoding"
            );
        }
    }

    /// The JPEG part of every viewer's message is the hub's own buffer: one allocation
    /// however many viewers, not a copy each.
    #[test]
    fn the_jpeg_is_shared_not_copied() {
        let f = hub_frame(Bytes::from(vec![1u8; 50_000]), 1);
        let hub_ptr = f.jpeg.as_ptr();
        for message in [
            v1(&f, 0).unwrap(),
            v1(&f, 3).unwrap(),
            tutorial(f.jpeg.clone()).unwrap(),
        ] {
            let (prefix, jpeg) = message.into_inner();
            assert!(
                prefix.len() < 64,
                "only the small fields are written: {}",
                prefix.len()
            );
            assert_eq!(
                jpeg.as_ptr(),
                hub_ptr,
                "the message's JPEG is the hub's allocation"
            );
            assert_eq!(jpeg.len(), 50_000);
        }
    }

    #[test]
    fn split_messages_keep_their_bytes_and_share_the_jpeg() {
        let f = hub_frame(
            Bytes::from((0..=255u8).cycle().take(5000).collect::<Vec<_>>()),
            1,
        );
        for message in [v1(&f, 2).unwrap(), tutorial(Bytes::new()).unwrap()] {
            let whole = flat(&message);
            let (head, last) = split_last_byte(message);
            assert_eq!(last.remaining(), 1);
            assert_eq!([flat(&head), flat(&last)].concat(), whole);
        }
        let (head, _) = split_last_byte(v1(&f, 0).unwrap());
        assert_eq!(
            head.last_ref().as_ptr(),
            f.jpeg.as_ptr(),
            "still the hub's buffer"
        );
    }

    #[test]
    fn oversized_frames_get_tonics_status() {
        let big = Bytes::from(vec![0u8; MAX_FRAME_BYTES]);
        let e = tutorial(big).unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        assert!(e.message().contains("too large"), "{}", e.message());
    }
}
