//! The newest frame on the wire, with clients at their default settings. Freshness is
//! asserted by sequence numbers and the hub's own counts (frames sent to a viewer, frames it
//! skipped), never by time: how far behind the hub's newest frame is the frame a viewer just
//! read, and how many frames did the server send that the viewer has not read?

mod common;

use std::time::Duration;

use camcast::client::{self, FrameStream};
use camcast::hub::{HubConfig, ViewerReport};
use camcast::pb;
use common::core_client::CoreStream;
use common::TestServer;
use prost::Message;
use tonic::Code;

const TUTORIAL: &str = "/WebcamStreaming/StartWebcamStreaming";
const V1: &str = "/camcast.v1.Camera/StreamFrames";

/// How many frames the one a viewer just read may trail the hub's newest: the frame captured
/// while it travelled, and some slack for a loaded test machine. A queue in the client's 4 MiB
/// window puts it dozens of frames behind within a second.
const LAG: u64 = 3;

fn newest(server: &TestServer) -> u64 {
    server.hub.report().counters.frames_captured
}

fn viewer(server: &TestServer, name: &str) -> ViewerReport {
    let report = server.hub.report();
    report
        .viewers
        .into_iter()
        .find(|v| v.info.name == name)
        .unwrap_or_else(|| panic!("viewer {name} is connected"))
}

/// A grpcio-like viewer (see `core_client`) on the tutorial API or camcast.v1.
async fn open_core(server: &TestServer, path: &str, name: &str) -> CoreStream {
    let request = if path == V1 {
        pb::v1::StreamRequest {
            viewer_name: name.into(),
            max_fps: 0.0,
        }
        .encode_to_vec()
    } else {
        pb::tutorial::ClientName {
            client_name: name.into(),
        }
        .encode_to_vec()
    };
    CoreStream::open(server.addr, path, &request).await
}

/// Reads one message; on camcast.v1 also checks it is within [`LAG`] of the newest frame and
/// returns its `skipped`.
async fn read(server: &TestServer, stream: &mut CoreStream, path: &str) -> u64 {
    let msg = stream.next().await.expect("the stream stays open");
    if path != V1 {
        let image = pb::tutorial::CaptureImage::decode(msg).unwrap();
        common::decode(&image.image_bytes);
        return 0;
    }
    let frame = pb::v1::Frame::decode(msg).unwrap();
    let newest = newest(server);
    assert!(
        newest - frame.seq <= LAG,
        "frame {} read while the newest is {newest}",
        frame.seq
    );
    frame.skipped
}

#[tokio::test]
async fn a_slow_reader_that_credits_as_it_reads_gets_fresh_frames_on_both_contracts() {
    let server = TestServer::pattern(320, 240, 30.0).await;
    for path in [V1, TUTORIAL] {
        let name = format!("slow {path}");
        let mut stream = open_core(&server, path, &name).await;
        let mut skipped = read(&server, &mut stream, path).await;
        let mut reads = 1;
        // A third of the camera's rate.
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            skipped += read(&server, &mut stream, path).await;
            reads += 1;
        }
        let v = viewer(&server, &name);
        assert!(
            v.frames_sent <= reads + 1,
            "{path}: nothing queued for the viewer: {} sent, {reads} read",
            v.frames_sent
        );
        assert!(v.frames_skipped > 0, "{path}: the hub skipped: {v:?}");
        if path == V1 {
            assert!(skipped > 0, "the viewer was told what it skipped");
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn after_a_pause_the_next_frame_is_the_newest() {
    let server = TestServer::pattern(320, 240, 30.0).await;
    for path in [V1, TUTORIAL] {
        let name = format!("pausing {path}");
        let mut stream = open_core(&server, path, &name).await;
        read(&server, &mut stream, path).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let skipped = read(&server, &mut stream, path).await;
        let v = viewer(&server, &name);
        assert!(
            v.frames_sent <= 3,
            "{path}: nothing was sent during the pause: {v:?}"
        );
        assert!(v.frames_skipped > 0, "{path}: {v:?}");
        if path == V1 {
            assert!(skipped > 0);
        }
    }
    server.stop().await.unwrap();
}

/// tonic's client (h2) credits only once a third of its window is read, so the server cannot
/// see a slow reader before then. What it guarantees such a client: it keeps getting frames,
/// skips the rest, and has at most half its window sent ahead of it (not all of it).
#[tokio::test]
async fn a_slow_batch_crediting_reader_is_neither_stalled_nor_flooded() {
    const WINDOW: u32 = 4 << 20;
    let server = TestServer::pattern(1280, 720, 30.0).await;
    let channel = tonic::transport::Endpoint::from_shared(client::endpoint_uri(&server.target()))
        .unwrap()
        .initial_stream_window_size(WINDOW)
        .connect()
        .await
        .unwrap();
    let mut stream = FrameStream::open(client::untokened(channel), false, "batch", 0.0)
        .await
        .unwrap();
    let (mut reads, mut smallest, mut largest) = (0u64, usize::MAX, 0);
    for _ in 0..50 {
        let f = stream.next().await.unwrap().expect("frames keep coming");
        smallest = smallest.min(f.jpeg.len());
        largest = largest.max(f.jpeg.len() + 64); // with the message's other fields
        reads += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = viewer(&server, "batch");
    // Frames go while at most half the window is uncredited, and unread frames are part of
    // that, but for the DATA chunk (16 KiB at most) tonic's decoder has taken and credited
    // before the application reads the message in it.
    let ahead = v.frames_sent - reads;
    let half_window = (u64::from(WINDOW / 2) + largest as u64 + 16_384) / smallest as u64;
    assert!(
        ahead <= half_window,
        "{ahead} frames sent ahead of the reader; half its window and a frame hold {half_window}"
    );
    assert!(v.frames_skipped > 0, "{v:?}");
    server.stop().await.unwrap();
}

/// grpcio puts every channel to one address on one connection: 50 viewers in one program are
/// 50 HTTP/2 streams. Each gets frames or at once a refusal naming the limit; none waits
/// silently behind the connection's stream limit.
#[tokio::test]
async fn fifty_viewers_on_one_connection_are_served_or_refused_with_the_limit() {
    let cfg = HubConfig {
        max_viewers: 40,
        ..HubConfig::default()
    };
    let server = TestServer::start(common::pattern(160, 120, 30.0), cfg).await;
    let conn = server.channel().await;
    let mut calls = Vec::new();
    for i in 0..50 {
        let conn = conn.clone();
        calls.push(tokio::spawn(async move {
            let mut s = FrameStream::open(conn, i % 2 == 0, &format!("many-{i}"), 0.0).await?;
            s.next().await?.expect("a first frame");
            Ok::<_, tonic::Status>(s) // kept open: the slot stays taken
        }));
    }
    let mut watching = Vec::new();
    let mut refused = Vec::new();
    // The timeout only turns a silent queue into a failure instead of a hang.
    let all = futures_util::future::join_all(calls);
    for result in tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("every call was answered while 40 streams stay open")
    {
        match result.unwrap() {
            Ok(stream) => watching.push(stream),
            Err(status) => refused.push(status),
        }
    }
    assert_eq!(watching.len(), 40);
    assert_eq!(refused.len(), 10);
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("limit reached (40 viewers)"),
            "{}",
            status.message()
        );
    }
    drop(watching);
    server.stop().await.unwrap();
}
