//! The newest frame on the wire, with clients at their default settings. Freshness is
//! asserted by sequence numbers and the hub's own counts (frames sent to a viewer, frames it
//! skipped), never by time: how far behind the hub's newest frame is the frame a viewer just
//! read, and how many frames did the server send that the viewer has not read?

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use camcast::client::{self, FrameStream};
use camcast::hub::{Api, HubConfig, RateCap, ViewerInfo, ViewerReport};
use camcast::pb;
use common::core_client::CoreStream;
use common::TestServer;
use prost::Message;
use tonic::Code;

const TUTORIAL: &str = "/WebcamStreaming/StartWebcamStreaming";
const V1: &str = "/camcast.v1.Camera/StreamFrames";

/// How many frames the one a viewer just read may trail the hub's newest *when the reader
/// asked for it* (so the time it took to travel, long on an emulated CPU, is not counted):
/// slack for a credit that runs a little ahead and a loaded test machine. A frame sent before
/// the reader asked for it trails by the reader's whole pause (9 frames here), a queue in the
/// client's 4 MiB window by dozens.
const LAG: u64 = 3;

/// A slow reader's pause between reads: 9 frames of the 30 fps pattern.
const SLOW: Duration = Duration::from_millis(300);

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

/// Every frame's sequence number by its JPEG, from a viewer of the hub itself: the tutorial
/// API's messages carry only the picture.
struct Reference {
    seqs: Arc<Mutex<HashMap<Bytes, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reference {
    fn start(server: &TestServer) -> Reference {
        let mut sub = server
            .hub
            .connect(ViewerInfo {
                name: "reference".into(),
                addr: None,
                api: Api::V1,
                max_fps: RateCap::NONE,
            })
            .unwrap();
        let seqs = Arc::new(Mutex::new(HashMap::new()));
        let filled = seqs.clone();
        let task = tokio::spawn(async move {
            while let Some(d) = sub.next().await {
                let mut seqs = filled.lock().unwrap();
                seqs.insert(d.frame.jpeg.clone(), d.frame.seq);
                seqs.retain(|_, seq| *seq + 300 > d.frame.seq);
            }
        });
        Reference { seqs, task }
    }

    fn seq(&self, jpeg: &Bytes) -> u64 {
        *self
            .seqs
            .lock()
            .unwrap()
            .get(jpeg)
            .expect("the hub handed this frame to its viewers")
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A grpcio-like viewer (see `core_client`) on the tutorial API or camcast.v1.
async fn open_core(server: &TestServer, path: &str, name: &str) -> CoreStream {
    let request = if path == V1 {
        pb::v1::StreamRequest {
            viewer_name: name.into(),
            max_fps: 0.0,
            ..Default::default()
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

/// Reads one message, checks it is within [`LAG`] of the newest frame as the reader asks,
/// and returns the `skipped` it reports (camcast.v1) or 0.
async fn read(
    server: &TestServer,
    reference: &Reference,
    stream: &mut CoreStream,
    path: &str,
) -> u64 {
    let asked_at = newest(server);
    let msg = stream.next().await.expect("the stream stays open");
    let (seq, skipped) = if path == V1 {
        let frame = pb::v1::Frame::decode(msg).unwrap();
        (frame.seq, frame.skipped)
    } else {
        let image = pb::tutorial::CaptureImage::decode(msg).unwrap();
        common::decode(&image.image_bytes);
        (reference.seq(&image.image_bytes), 0)
    };
    assert!(
        asked_at.saturating_sub(seq) <= LAG,
        "{path}: frame {seq} read, asked for when the newest was {asked_at}"
    );
    skipped
}

/// 640x480 frames (about 15 KB) take gRPC's C core more than one socket read each, which is
/// when its credit can run ahead of its reader (see `core_client` and docs/flow-control.md).
#[tokio::test]
async fn a_slow_reader_that_credits_as_it_reads_gets_fresh_frames_on_both_contracts() {
    let server = TestServer::pattern(640, 480, 30.0).await;
    let reference = Reference::start(&server);
    for path in [V1, TUTORIAL] {
        let name = format!("slow {path}");
        let mut stream = open_core(&server, path, &name).await;
        let mut skipped = read(&server, &reference, &mut stream, path).await;
        let mut reads = 1;
        for _ in 0..8 {
            tokio::time::sleep(SLOW).await;
            skipped += read(&server, &reference, &mut stream, path).await;
            reads += 1;
        }
        let v = viewer(&server, &name);
        assert!(
            v.frames_sent <= reads,
            "{path}: a frame only when the reader asked: {} sent, {reads} read",
            v.frames_sent
        );
        assert!(v.frames_skipped > 0, "{path}: the hub skipped: {v:?}");
        if path == V1 {
            assert!(skipped > 0, "the viewer was told what it skipped");
        }
    }
    drop(reference);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn after_a_pause_the_next_frame_is_the_newest() {
    let server = TestServer::pattern(640, 480, 30.0).await;
    let reference = Reference::start(&server);
    for path in [V1, TUTORIAL] {
        let name = format!("pausing {path}");
        let mut stream = open_core(&server, path, &name).await;
        read(&server, &reference, &mut stream, path).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let skipped = read(&server, &reference, &mut stream, path).await;
        let v = viewer(&server, &name);
        assert_eq!(
            v.frames_sent, 2,
            "{path}: nothing was sent during the pause: {v:?}"
        );
        assert!(v.frames_skipped > 0, "{path}: {v:?}");
        if path == V1 {
            assert!(skipped > 0);
        }
    }
    drop(reference);
    server.stop().await.unwrap();
}

/// A tonic client with a 4 MiB stream window: it credits only once a third of it is read.
async fn big_window_channel(server: &TestServer) -> client::Conn {
    let channel = tonic::transport::Endpoint::from_shared(client::endpoint_uri(&server.target()))
        .unwrap()
        .initial_stream_window_size(4 << 20)
        .connect()
        .await
        .unwrap();
    client::untokened(channel)
}

/// PullFrames (camcast-view's way): a frame only when asked, whatever the client's window
/// and however it credits.
#[tokio::test]
async fn a_slow_pull_reader_gets_frames_within_two_of_the_newest() {
    let server = TestServer::pattern(640, 480, 30.0).await;
    let mut stream = FrameStream::pull(big_window_channel(&server).await, "puller", 0.0)
        .await
        .unwrap();
    let (mut reads, mut skipped) = (0, 0);
    for _ in 0..8 {
        // The newest when the viewer asks: how long the frame takes to arrive is not its age.
        let asked_at = newest(&server);
        let f = stream.next().await.unwrap().expect("a frame");
        let seq = f.seq.unwrap();
        assert!(
            asked_at.saturating_sub(seq) <= 2,
            "frame {seq} read, asked for when the newest was {asked_at}"
        );
        (reads, skipped) = (reads + 1, skipped + f.skipped);
        tokio::time::sleep(SLOW).await;
    }
    let v = viewer(&server, "puller");
    assert_eq!(v.frames_sent, reads, "one frame per request: {v:?}");
    assert!(skipped > 0 && v.frames_skipped > 0, "{v:?}");
    drop(stream);
    server.viewers_gone().await;
    server.stop().await.unwrap();
}

/// Requests do not add up: a viewer that sends a hundred at once and then reads nothing for
/// a second (30 frames captured) has at most the frame or two answering them waiting for it,
/// and one that keeps asking gets each captured frame at most once.
#[tokio::test]
async fn a_viewer_that_floods_requests_gets_no_queue() {
    let server = TestServer::pattern(320, 240, 30.0).await;
    let (requests, queue) = tokio::sync::mpsc::channel(1000);
    let first = pb::v1::PullRequest {
        viewer_name: "flood".into(),
        max_fps: 0.0,
        ..Default::default()
    };
    requests.send(first).await.unwrap();
    for _ in 0..99 {
        requests.send(pb::v1::PullRequest::default()).await.unwrap();
    }
    let mut frames = client::camera_client(server.channel().await)
        .pull_frames(tokio_stream::wrappers::ReceiverStream::new(queue))
        .await
        .unwrap()
        .into_inner();
    // Reads nothing while the camera captures 30 frames (a second, or longer on a slow CPU).
    common::eventually("30 frames captured", || async { newest(&server) >= 30 }).await;
    let sent = viewer(&server, "flood").frames_sent;
    assert!(
        (1..=2).contains(&sent),
        "{sent} frames sent for 100 requests at once"
    );
    let mut got = 0;
    for _ in 0..sent {
        frames.message().await.unwrap().expect("the answer");
        got += 1;
    }
    // Asking without pause while reading: never more frames than the camera captured.
    let flooding = tokio::spawn({
        let requests = requests.clone();
        async move {
            for _ in 0..1000 {
                if requests.send(pb::v1::PullRequest::default()).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let captured_before = newest(&server);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let f = frames.message().await.unwrap().expect("a frame");
        assert!(seen.insert(f.seq), "frame {} sent twice", f.seq);
        got += 1;
    }
    assert!(
        seen.len() as u64 <= newest(&server) - captured_before + 1,
        "no more frames than the camera captured"
    );
    flooding.abort();
    drop(requests);
    // The viewer's side is closed: what it asked for comes, then OK.
    let mut after = 0;
    while let Some(f) = frames.message().await.unwrap() {
        assert!(seen.insert(f.seq));
        after += 1;
    }
    assert!(after <= 1, "{after} frames after the last request");
    assert!(got + after < 1000, "one frame per request at most");
    server.viewers_gone().await;
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
    let mut stream = FrameStream::stream(client::untokened(channel), "batch", 0.0)
        .await
        .unwrap();
    let (mut reads, mut smallest, mut largest) = (0u64, usize::MAX, 0);
    let mut first_seq = None;
    for _ in 0..50 {
        let f = stream.next().await.unwrap().expect("frames keep coming");
        first_seq.get_or_insert(f.seq.expect("camcast.v1 frames carry a sequence number"));
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
    // Frames the camera made while this viewer watched, beyond those it was sent, must show
    // as skipped. (Under qemu-user a 720p camera can be slower than this reader: then there
    // is nothing to skip, and the sums still have to agree.)
    let made = server.hub.report().counters.frames_captured - first_seq.unwrap() + 1;
    if made > v.frames_sent + 1 {
        assert!(
            v.frames_skipped > 0,
            "{made} frames made while watching: {v:?}"
        );
    }
    drop(stream);
    server.stop().await.unwrap();
}

/// grpcio puts every channel to one address on one connection: 50 viewers in one program are
/// 50 HTTP/2 streams. Each gets frames or at once a refusal naming the limit; none waits
/// silently behind the connection's stream limit.
#[tokio::test]
async fn fifty_viewers_on_one_connection_are_served_or_refused_with_the_limit() {
    // One program is one address: raise its share to the whole cap, which is what this
    // test is about (the per-address cap is checked in http_api.rs).
    let cfg = HubConfig {
        max_viewers: 40,
        max_viewers_per_address: 40,
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
