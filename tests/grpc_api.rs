//! The real server on loopback TCP, driven by real tonic clients: both contracts, fan-out,
//! slow viewers, limits, shutdown, malformed input, health and reflection.

mod common;

use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes};
use camcast::admission::ConnLimits;
use camcast::client::{self, FrameStream};
use camcast::config::Config;
use camcast::hub::HubConfig;
use camcast::pb;
use common::{decode, eventually, TestServer};
use futures_util::StreamExt;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Status};

#[tokio::test]
async fn tutorial_api_streams_decodable_jpegs() {
    let server = TestServer::pattern(320, 240, 30.0).await;
    let mut stream = FrameStream::open(server.channel().await, true, "tutorial-client", 0.0)
        .await
        .unwrap();
    for _ in 0..5 {
        let frame = stream.next().await.unwrap().expect("a frame");
        assert_eq!(decode(&frame.jpeg), (320, 240));
    }
    drop(stream);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn v1_frames_carry_sequence_time_size_and_origin() {
    let server = TestServer::pattern(320, 240, 30.0).await;
    let mut stream = client::camera_client(server.channel().await)
        .stream_frames(pb::v1::StreamRequest {
            viewer_name: "meta".into(),
            max_fps: 0.0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut last_seq = 0;
    for _ in 0..5 {
        let f = stream.message().await.unwrap().unwrap();
        assert!(f.seq > last_seq);
        assert_eq!(
            f.seq - last_seq - 1,
            if last_seq == 0 { f.seq - 1 } else { f.skipped }
        );
        last_seq = f.seq;
        assert_eq!((f.width, f.height), (320, 240));
        assert_eq!(f.origin, pb::v1::FrameOrigin::Encoded as i32);
        let age = SystemTime::now()
            .duration_since(camcast::frame::from_unix_us(f.capture_time_unix_us))
            .expect("capture time is not in the future");
        assert!(
            age < Duration::from_secs(60),
            "capture time is current: {age:?}"
        );
        assert_eq!(decode(&f.jpeg), (320, 240));
    }
    drop(stream);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn twenty_concurrent_viewers_on_both_apis_all_decode() {
    // All twenty come from 127.0.0.1, above the default per-address caps (16 connections, 8 viewers).
    let config = Config {
        conn: ConnLimits {
            per_address: 32,
            ..ConnLimits::default()
        },
        hub: HubConfig {
            max_viewers_per_address: 32,
            ..HubConfig::default()
        },
        ..common::config()
    };
    let server = TestServer::launch(config, common::pattern(320, 240, 30.0)).await;
    let mut viewers = Vec::new();
    for i in 0..20 {
        let channel = server.channel().await;
        viewers.push(tokio::spawn(async move {
            let tutorial_api = i % 2 == 0;
            let mut s = FrameStream::open(channel, tutorial_api, &format!("viewer-{i}"), 0.0)
                .await
                .unwrap();
            let mut decoded = 0;
            while decoded < 10 {
                let f = s.next().await.unwrap().expect("stream stays open");
                assert_eq!(decode(&f.jpeg), (320, 240));
                decoded += 1;
            }
            decoded
        }));
    }
    for v in viewers {
        assert_eq!(v.await.unwrap(), 10);
    }
    server.stop().await.unwrap();
}

/// A viewer that stops reading must not hold back others or make the server queue frames for
/// it: the server hands it only what fits in the transport's flow-control buffers and counts the
/// rest as skipped.
#[tokio::test]
async fn slow_viewer_neither_slows_others_nor_queues_on_the_server() {
    let server = TestServer::pattern(1280, 720, 15.0).await;
    // The stalled viewer advertises a small HTTP/2 window, like a congested phone on Wi-Fi.
    let stalled_channel = server.small_window_channel().await;
    let mut stalled = FrameStream::stream(stalled_channel, "stalled", 0.0)
        .await
        .unwrap();
    stalled.next().await.unwrap().expect("first frame");

    let mut fast = FrameStream::open(server.channel().await, false, "fast", 0.0)
        .await
        .unwrap();
    let (mut received, mut skipped) = (0u64, 0u64);
    while received < 90 {
        let f = fast.next().await.unwrap().unwrap();
        skipped += f.skipped;
        received += 1;
    }
    assert!(
        skipped * 10 <= received,
        "fast viewer kept the camera's rate: {skipped} skipped of {}",
        received + skipped
    );

    let info = client::camera_client(server.channel().await)
        .get_info(pb::v1::GetInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let slow = info.viewers.iter().find(|v| v.name == "stalled").unwrap();
    assert!(
        slow.frames_sent <= 30,
        "server handed the stalled viewer only what its buffers hold, not a queue: {} sent",
        slow.frames_sent
    );
    assert!(
        slow.frames_skipped >= 50,
        "missed frames are counted: {slow:?}"
    );
    drop((stalled, fast));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn capture_stops_after_the_last_viewer_leaves() {
    let cfg = HubConfig {
        linger: Duration::from_millis(100),
        ..HubConfig::default()
    };
    let server = TestServer::start(common::pattern(160, 120, 30.0), cfg).await;
    assert!(!server.hub.capturing(), "idle before the first viewer");
    for round in 1..=2u64 {
        let mut s = FrameStream::open(server.channel().await, round == 2, "v", 0.0)
            .await
            .unwrap();
        s.next().await.unwrap().unwrap();
        assert!(server.hub.capturing());
        drop(s);
        let hub = server.hub.clone();
        eventually("capture stops", || {
            let hub = hub.clone();
            async move { !hub.capturing() && hub.viewer_count() == 0 }
        })
        .await;
        assert_eq!(server.hub.report().counters.capture_starts, round);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn viewer_limit_answers_resource_exhausted_on_both_apis() {
    let cfg = HubConfig {
        max_viewers: 2,
        ..HubConfig::default()
    };
    let server = TestServer::start(common::pattern(160, 120, 30.0), cfg).await;
    let mut a = FrameStream::open(server.channel().await, false, "a", 0.0)
        .await
        .unwrap();
    let mut b = FrameStream::open(server.channel().await, true, "b", 0.0)
        .await
        .unwrap();
    a.next().await.unwrap().unwrap();
    b.next().await.unwrap().unwrap();
    for tutorial_api in [false, true] {
        let err = FrameStream::open(server.channel().await, tutorial_api, "c", 0.0)
            .await
            .err()
            .expect("third viewer refused");
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("limit"), "{}", err.message());
    }
    drop(a);
    let hub = server.hub.clone();
    eventually("a's slot is freed", || {
        let hub = hub.clone();
        async move { hub.viewer_count() == 1 }
    })
    .await;
    let mut c = FrameStream::open(server.channel().await, false, "c", 0.0)
        .await
        .unwrap();
    c.next().await.unwrap().unwrap();
    assert_eq!(server.hub.report().counters.viewers_rejected, 2);
    drop((b, c));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_ends_streams_with_ok_status() {
    let server = TestServer::pattern(160, 120, 30.0).await;
    let mut pull = FrameStream::open(server.channel().await, false, "pull", 0.0)
        .await
        .unwrap();
    let mut v1 = FrameStream::stream(server.channel().await, "v1", 0.0)
        .await
        .unwrap();
    let mut tutorial = FrameStream::open(server.channel().await, true, "tutorial", 0.0)
        .await
        .unwrap();
    assert!(matches!(pull, FrameStream::Pull(_)));
    for s in [&mut pull, &mut v1, &mut tutorial] {
        s.next().await.unwrap().unwrap();
    }
    let stopping = tokio::spawn(server.stop_with_viewers());
    for s in [&mut pull, &mut v1, &mut tutorial] {
        // Drain what was in flight; the stream must then end cleanly, not with an error.
        loop {
            match s.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => panic!("stream ended with an error: {e}"),
            }
        }
    }
    drop((pull, v1, tutorial));
    stopping.await.unwrap().check().await.unwrap();
}

/// Sends arbitrary bytes as a request message (what a buggy or hostile client can do).
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

async fn raw_call(server: &TestServer, path: &'static str, body: Bytes) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let mut stream = grpc
        .server_streaming(
            tonic::Request::new(body),
            PathAndQuery::from_static(path),
            RawCodec,
        )
        .await?
        .into_inner();
    stream.next().await.transpose().map(|_| ())
}

/// A PullFrames call with these raw request messages, the viewer's side closed after them:
/// the frames it got and how it ended.
async fn raw_pull(server: &TestServer, requests: Vec<Bytes>) -> (usize, Result<(), Status>) {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let path = PathAndQuery::from_static("/camcast.v1.Camera/PullFrames");
    let request = tonic::Request::new(futures_util::stream::iter(requests));
    let mut stream = match grpc.streaming(request, path, RawCodec).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (0, Err(status)),
    };
    let mut frames = 0;
    loop {
        match stream.next().await {
            Some(Ok(_)) => frames += 1,
            Some(Err(status)) => return (frames, Err(status)),
            None => return (frames, Ok(())),
        }
    }
}

/// PullFrames' requests get the statuses every other request gets, first or later; a viewer
/// that asks for nothing gets OK and no frame; no viewer slot is left behind.
#[tokio::test]
async fn pull_requests_are_checked_like_every_request() {
    let server = TestServer::pattern(160, 120, 30.0).await;
    let request = |name: &str, max_fps: f32| {
        let r = pb::v1::PullRequest {
            viewer_name: name.into(),
            max_fps,
            ..Default::default()
        };
        Bytes::from(r.encode_to_vec())
    };
    let garbage = Bytes::from_static(&[0x0a, 100, 1, 2, 3]);
    let mut huge = vec![0x0a, 0xa0, 0x8d, 0x06]; // field 1, 100 000 bytes
    huge.resize(4 + 100_000, b'x');
    let cases = [
        (vec![garbage.clone()], Code::Internal, "failed to decode"),
        (vec![Bytes::from(huge)], Code::OutOfRange, "too large"),
        (
            vec![request(&"n".repeat(1000), 0.0)],
            Code::InvalidArgument,
            "at most 64",
        ),
        (
            vec![request("x", -1.0)],
            Code::InvalidArgument,
            "max_fps must be",
        ),
        (
            vec![request("x", 0.0), garbage],
            Code::Internal,
            "failed to decode",
        ),
    ];
    for (requests, code, words) in cases {
        let (frames, end) = raw_pull(&server, requests).await;
        let status = end.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(words), "{status:?}");
        assert!(frames <= 1, "{frames} frames");
        server.viewers_gone().await;
    }
    // Asking for nothing, then for two frames.
    let (frames, end) = raw_pull(&server, vec![]).await;
    assert!(frames == 0 && end.is_ok(), "{frames} {end:?}");
    let asked = vec![request("two", 0.0), request("", 0.0)];
    let (frames, end) = raw_pull(&server, asked).await;
    assert!(end.is_ok() && (1..=2).contains(&frames), "{frames} {end:?}");
    server.viewers_gone().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_clear_errors_and_harm_nothing() {
    let server = TestServer::pattern(160, 120, 30.0).await;
    const SEED: &str = "/WebcamStreaming/StartWebcamStreaming";
    const V1: &str = "/camcast.v1.Camera/StreamFrames";

    // Not protobuf at all (field 1 says length 100, 3 bytes follow).
    let err = raw_call(&server, SEED, Bytes::from_static(&[0x0a, 100, 1, 2, 3]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");

    // A name far over the limit, in an otherwise valid message.
    let err = FrameStream::open(server.channel().await, true, &"n".repeat(1000), 0.0)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at most 64"), "{}", err.message());

    // A request larger than any real one: rejected before it is decoded.
    let mut huge = vec![0x0a];
    let len = 100_000usize;
    huge.extend_from_slice(&[
        (len & 0x7f | 0x80) as u8,
        ((len >> 7) & 0x7f | 0x80) as u8,
        (len >> 14) as u8,
    ]);
    huge.resize(huge.len() + len, b'x');
    let err = raw_call(&server, V1, Bytes::from(huge)).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err}"
    );

    // Nonsense frame-rate caps, including ones that once panicked after registering the viewer
    // and leaked its slot (1e-30: `Duration::from_secs_f64` overflowed).
    for max_fps in [-1.0, f32::NAN, f32::INFINITY, 1e-30, 1e-45, 0.009, 1e30] {
        let err = client::camera_client(server.channel().await)
            .stream_frames(pb::v1::StreamRequest {
                viewer_name: "x".into(),
                max_fps,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{max_fps}");
        assert!(
            err.message()
                .contains("max_fps must be 0 (the camera's rate) or from 0.01 to 1000"),
            "{max_fps}: {}",
            err.message()
        );
    }
    assert_eq!(server.hub.viewer_count(), 0, "no slot leaked");

    // Unknown method.
    let err = raw_call(
        &server,
        "/WebcamStreaming/StopWebcamStreaming",
        Bytes::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    // None of it counted as a viewer, and a proper viewer is served.
    assert_eq!(server.hub.report().counters.viewers_total, 0);
    let mut ok = FrameStream::open(server.channel().await, true, "after", 0.0)
        .await
        .unwrap();
    assert_eq!(decode(&ok.next().await.unwrap().unwrap().jpeg), (160, 120));
    drop(ok);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn snapshot_and_info_describe_the_camera_and_its_viewers() {
    let server = TestServer::pattern(320, 240, 30.0).await;
    let mut camera = client::camera_client(server.channel().await);
    let snap = camera
        .snapshot(pb::v1::SnapshotRequest {
            viewer_name: "snap".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decode(&snap.jpeg), (320, 240));

    let mut watcher = FrameStream::open(server.channel().await, false, "kitchen tablet", 0.0)
        .await
        .unwrap();
    watcher.next().await.unwrap().unwrap();
    let info = camera
        .get_info(pb::v1::GetInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.source, "test-pattern");
    assert!(info.capturing);
    assert_eq!(info.state, pb::v1::State::Streaming as i32);
    let mode = info.mode.unwrap();
    assert_eq!((mode.width, mode.height, mode.fps), (320, 240, 30.0));
    assert_eq!(info.viewers.len(), 1);
    let v = &info.viewers[0];
    assert_eq!((v.name.as_str(), v.api.as_str()), ("kitchen tablet", "v1"));
    assert!(v.address.starts_with("127.0.0.1:"), "{}", v.address);
    assert!(v.frames_sent >= 1);
    let counters = info.counters.unwrap();
    assert!(counters.frames_captured >= 1);
    assert_eq!(
        counters.viewers_total, 2,
        "the snapshot counted as a brief viewer"
    );
    drop((camera, watcher));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn health_reports_serving_per_service() {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};
    let server = TestServer::pattern(160, 120, 30.0).await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "WebcamStreaming", "camcast.v1.Camera"] {
        // Polled: the health service takes up the camera's state as the server starts.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut status = ServingStatus::Unknown;
        while tokio::time::Instant::now() < deadline {
            status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status();
            if status == ServingStatus::Serving {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }
    drop(health);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_both_contracts_for_grpcurl() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let server = TestServer::pattern(160, 120, 30.0).await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response: {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "WebcamStreaming",
        "camcast.v1.Camera",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    drop((responses, reflection));
    server.stop().await.unwrap();
}

/// A camcast.v1 server from before PullFrames: tonic answers the method UNIMPLEMENTED.
struct OlderServer;

type Frames =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::v1::Frame, Status>> + Send>>;

#[tonic::async_trait]
impl pb::v1::camera_server::Camera for OlderServer {
    type StreamFramesStream = Frames;
    type PullFramesStream = Frames;

    async fn stream_frames(
        &self,
        _: tonic::Request<pb::v1::StreamRequest>,
    ) -> Result<tonic::Response<Frames>, Status> {
        let frame = |seq| {
            Ok(pb::v1::Frame {
                seq,
                ..Default::default()
            })
        };
        Ok(tonic::Response::new(Box::pin(futures_util::stream::iter(
            (1..=3).map(frame),
        ))))
    }

    async fn pull_frames(
        &self,
        _: tonic::Request<tonic::Streaming<pb::v1::PullRequest>>,
    ) -> Result<tonic::Response<Frames>, Status> {
        Err(Status::unimplemented(""))
    }

    async fn snapshot(
        &self,
        _: tonic::Request<pb::v1::SnapshotRequest>,
    ) -> Result<tonic::Response<pb::v1::Frame>, Status> {
        Err(Status::unimplemented(""))
    }

    async fn get_info(
        &self,
        _: tonic::Request<pb::v1::GetInfoRequest>,
    ) -> Result<tonic::Response<pb::v1::CameraInfo>, Status> {
        Err(Status::unimplemented(""))
    }
}

/// camcast-view's stream asks for PullFrames and, from a server without it, streams.
#[tokio::test]
async fn a_viewer_streams_from_a_server_without_pull_frames() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::v1::camera_server::CameraServer::new(OlderServer))
            .serve_with_incoming(incoming),
    );
    let channel = client::connect(&addr.to_string(), Duration::from_secs(10))
        .await
        .unwrap();
    let mut stream = FrameStream::open(channel, false, "viewer", 0.0)
        .await
        .unwrap();
    assert!(matches!(stream, FrameStream::V1(_)));
    for seq in 1..=3 {
        assert_eq!(stream.next().await.unwrap().unwrap().seq, Some(seq));
    }
    assert!(stream.next().await.unwrap().is_none());
    server.abort();
}
