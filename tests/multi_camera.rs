//! Several cameras in one server: each has its own hub and state, viewers on every camera at
//! once over both APIs, unknown names answered with the cameras that exist, the viewer caps
//! shared across cameras, and one camera failing while the others stream on.

mod common;

use std::time::Duration;

use camcast::client::{self, FrameStream};
use camcast::config::{CameraConfig, Config};
use camcast::hub::HubConfig;
use camcast::pb;
use camcast::source::fake::{FakeSource, Step};
use camcast::source::FrameSource;
use camcast::status::State;
use common::mjpeg_reader::PlainReader;
use common::TestServer;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A server config with these cameras (the first is the default), HTTP on, and `hub`'s caps.
fn config(names: &[&str], hub: HubConfig) -> Config {
    Config {
        cameras: names
            .iter()
            .map(|n| CameraConfig::named(n.parse().unwrap()))
            .collect(),
        hub,
        ..common::config_with_http()
    }
}

/// Test patterns of different widths, so a frame tells which camera it came from.
fn patterns(widths: &[u32]) -> Vec<Box<dyn FrameSource>> {
    widths
        .iter()
        .map(|w| common::pattern(*w, 120, 15.0))
        .collect()
}

async fn info(server: &TestServer, camera: &str) -> Result<pb::v1::CameraInfo, tonic::Status> {
    let req = pb::v1::GetInfoRequest {
        camera: camera.into(),
    };
    let info = client::camera_client(server.channel().await)
        .get_info(req)
        .await?;
    Ok(info.into_inner())
}

#[tokio::test]
async fn viewers_on_every_camera_at_once_over_grpc() {
    let server = TestServer::launch_cameras(
        config(&["door", "yard", "shed"], common::hub_config()),
        patterns(&[160, 192, 224]),
    )
    .await;
    let mut streams = Vec::new();
    for (camera, width) in [("door", 160), ("yard", 192), ("shed", 224), ("", 160)] {
        let s = FrameStream::open_camera(server.channel().await, camera, "v", 0.0)
            .await
            .unwrap();
        streams.push((s, width));
    }
    // The tutorial API serves the default camera.
    let tutorial = FrameStream::open(server.channel().await, true, "t", 0.0)
        .await
        .unwrap();
    streams.push((tutorial, 160));
    for _ in 0..3 {
        for (stream, width) in &mut streams {
            let frame = stream.next().await.unwrap().expect("a frame");
            let jpeg = camcast::jpeg::inspect(&frame.jpeg).unwrap();
            assert_eq!(
                u32::from(jpeg.width),
                *width,
                "a frame from the camera asked for"
            );
        }
    }
    let info = info(&server, "yard").await.unwrap();
    assert_eq!(info.camera, "yard");
    assert_eq!(info.viewers.len(), 1);
    assert_eq!(info.mode.unwrap().width, 192);
    let listed: Vec<(&str, bool, usize)> = info
        .cameras
        .iter()
        .map(|c| (c.name.as_str(), c.is_default, c.viewers.len()))
        .collect();
    assert_eq!(
        listed,
        [("door", true, 3), ("yard", false, 1), ("shed", false, 1)]
    );
    assert!(info
        .cameras
        .iter()
        .all(|c| c.state == pb::v1::State::Streaming as i32 && c.capturing));
    assert_eq!(info_default_camera(&server).await, "door");
    drop(streams);
    server.stop().await.unwrap();
}

async fn info_default_camera(server: &TestServer) -> String {
    info(server, "").await.unwrap().camera
}

#[tokio::test]
async fn an_unknown_camera_is_not_found_naming_the_cameras() {
    let server = TestServer::launch_cameras(
        config(&["door", "yard"], common::hub_config()),
        patterns(&[160, 192]),
    )
    .await;
    let expect_not_found = |result: Result<(), tonic::Status>, what: &str| {
        let status = result.expect_err(what);
        assert_eq!(status.code(), tonic::Code::NotFound, "{what}: {status:?}");
        assert!(
            status.message().contains("\"garage\"") && status.message().contains("door, yard"),
            "{what}: {}",
            status.message()
        );
    };
    let pull = FrameStream::pull_camera(server.channel().await, "garage", "v", 0.0).await;
    let pulled = match pull {
        Ok(mut s) => s.next().await.map(|_| ()),
        Err(e) => Err(e),
    };
    expect_not_found(pulled, "PullFrames");
    let streamed =
        match FrameStream::stream_camera(server.channel().await, "garage", "v", 0.0).await {
            Ok(mut s) => s.next().await.map(|_| ()),
            Err(e) => Err(e),
        };
    expect_not_found(streamed, "StreamFrames");
    let snap = client::camera_client(server.channel().await)
        .snapshot(pb::v1::SnapshotRequest {
            viewer_name: "s".into(),
            camera: "garage".into(),
        })
        .await
        .map(|_| ());
    expect_not_found(snap, "Snapshot");
    expect_not_found(info(&server, "garage").await.map(|_| ()), "GetInfo");
    // Case matters, and a hostile name is only compared.
    let status = info(&server, "DOOR").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = info(&server, &"\u{202e}x".repeat(1000)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_viewer_caps_count_across_cameras() {
    let hub = HubConfig {
        max_viewers: 3,
        ..common::hub_config()
    };
    let server = TestServer::launch_cameras(config(&["a", "b"], hub), patterns(&[160, 192])).await;
    let mut held = Vec::new();
    for camera in ["a", "b", "b"] {
        let mut s = FrameStream::open_camera(server.channel().await, camera, "v", 0.0)
            .await
            .unwrap();
        s.next().await.unwrap().unwrap();
        held.push(s);
    }
    let refused = match FrameStream::open_camera(server.channel().await, "a", "v", 0.0).await {
        Ok(mut s) => s.next().await.map(|_| ()),
        Err(e) => Err(e),
    };
    let status = refused.expect_err("a fourth viewer is one too many, whichever camera");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("3 viewers"),
        "{}",
        status.message()
    );
    // A seat given back on one camera can be taken on another.
    held.pop();
    common::eventually("the seat comes back", || async {
        server.cameras.viewer_count() == 2
    })
    .await;
    let mut s = FrameStream::open_camera(server.channel().await, "a", "v", 0.0)
        .await
        .unwrap();
    s.next().await.unwrap().unwrap();
    drop((s, held));
    server.stop().await.unwrap();

    // The per-host cap too: every viewer here comes from 127.0.0.1.
    let hub = HubConfig {
        max_viewers_per_address: 2,
        ..common::hub_config()
    };
    let server = TestServer::launch_cameras(config(&["a", "b"], hub), patterns(&[160, 192])).await;
    let mut a = FrameStream::open_camera(server.channel().await, "a", "v", 0.0)
        .await
        .unwrap();
    let mut b = FrameStream::open_camera(server.channel().await, "b", "v", 0.0)
        .await
        .unwrap();
    a.next().await.unwrap().unwrap();
    b.next().await.unwrap().unwrap();
    let refused = match FrameStream::open_camera(server.channel().await, "b", "v", 0.0).await {
        Ok(mut s) => s.next().await.map(|_| ()),
        Err(e) => Err(e),
    };
    let status = refused.expect_err("the host's third viewer");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("per address"),
        "{}",
        status.message()
    );
    drop((a, b));
    server.stop().await.unwrap();
}

/// One camera is unplugged (its source vanishes and stays absent): it waits for its device,
/// GetInfo and the appliance state say so, and the other cameras' viewers keep getting new
/// frames. Plugged back, it streams again to the viewer that stayed.
#[tokio::test]
async fn one_camera_unplugged_while_the_others_keep_streaming() {
    let hub = HubConfig {
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(100),
        ..common::hub_config()
    };
    let (fake, plug) = FakeSource::new(128, 96, Duration::from_millis(20));
    let mut sources = patterns(&[160, 192]);
    sources.insert(1, Box::new(fake));
    let server = TestServer::launch_cameras(config(&["door", "porch", "yard"], hub), sources).await;
    let mut viewers = Vec::new();
    for camera in ["door", "porch", "yard"] {
        let mut s = FrameStream::open_camera(server.channel().await, camera, camera, 0.0)
            .await
            .unwrap();
        s.next().await.unwrap().unwrap();
        viewers.push(s);
    }
    let porch = server.cameras.get("porch").unwrap().clone();
    plug.fail_next_starts(u64::MAX);
    plug.push([Step::Vanish]);
    let mut porch_state = porch.status.subscribe();
    porch_state
        .wait_for(|s| s.state == State::WaitingForCamera)
        .await
        .unwrap();
    // The others stream on: 10 new frames each, newer every time.
    for i in [0, 2] {
        let mut last = 0;
        for _ in 0..10 {
            let seq = viewers[i].next().await.unwrap().unwrap().seq.unwrap();
            assert!(seq > last);
            last = seq;
        }
    }
    let info = info(&server, "").await.unwrap();
    let states: Vec<i32> = info.cameras.iter().map(|c| c.state).collect();
    use pb::v1::State as S;
    assert_eq!(
        states,
        [
            S::Streaming as i32,
            S::WaitingForCamera as i32,
            S::Streaming as i32
        ]
    );
    assert_eq!(info.cameras[1].viewers.len(), 1, "its viewer waits");
    // The appliance's state (LED, systemd, health) is the worst camera's.
    common::eventually("health says a camera is missing", || async {
        v1_health(&server).await == ServingStatus::NotServing
    })
    .await;
    // The tutorial API serves the default camera, which is fine; so is the server.
    let tutorial = health_of(&server, camcast::grpc::TUTORIAL_SERVICE).await;
    assert_eq!(tutorial, ServingStatus::Serving);
    assert_eq!(health_of(&server, "").await, ServingStatus::Serving);
    // Plugged back in: its viewer gets frames again.
    plug.fail_next_starts(0);
    let frame = tokio::time::timeout(Duration::from_secs(10), viewers[1].next())
        .await
        .expect("the replugged camera streams again")
        .unwrap()
        .unwrap();
    assert_eq!(frame.size, Some((128, 96)));
    common::eventually("health follows the camera back", || async {
        v1_health(&server).await == ServingStatus::Serving
    })
    .await;
    drop(viewers);
    server.stop().await.unwrap();
}

async fn v1_health(server: &TestServer) -> ServingStatus {
    health_of(server, camcast::grpc::V1_SERVICE).await
}

async fn health_of(server: &TestServer, service: &str) -> ServingStatus {
    let mut health = HealthClient::new(server.channel().await);
    let request = HealthCheckRequest {
        service: service.into(),
    };
    let status = health.check(request).await.unwrap().into_inner().status;
    ServingStatus::try_from(status).unwrap()
}

/// GET `path` on a fresh connection that closes after the answer: status code and body.
async fn http_get(server: &TestServer, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.http_addr())
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response head");
    let code = head[9..12].parse().unwrap();
    (code, body.to_string())
}

async fn mjpeg(server: &TestServer, path: &str) -> PlainReader<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(server.http_addr())
        .await
        .unwrap();
    PlainReader::open(tcp, path).await.unwrap()
}

#[tokio::test]
async fn viewers_on_every_camera_at_once_over_http() {
    let server = TestServer::launch_cameras(
        config(&["door", "yard", "shed"], common::hub_config()),
        patterns(&[160, 192, 224]),
    )
    .await;
    let paths = [
        ("/stream.mjpg", 160),
        ("/cam/door/stream.mjpg", 160),
        ("/cam/yard/stream.mjpg", 192),
        ("/cam/shed/stream.mjpg?fps=5", 224),
    ];
    let mut readers = Vec::new();
    for (path, width) in paths {
        readers.push((mjpeg(&server, path).await, width));
    }
    // A gRPC viewer on one of them at the same time.
    let mut grpc = FrameStream::open_camera(server.channel().await, "yard", "g", 0.0)
        .await
        .unwrap();
    for _ in 0..3 {
        for (reader, width) in &mut readers {
            let part = reader.next_part().await.unwrap().expect("a part");
            let jpeg = camcast::jpeg::inspect(&part.jpeg).unwrap();
            assert_eq!(u32::from(jpeg.width), *width);
        }
        assert_eq!(grpc.next().await.unwrap().unwrap().size, Some((192, 120)));
    }
    let viewers: Vec<usize> = server
        .cameras
        .iter()
        .map(|c| c.hub.viewer_count())
        .collect();
    assert_eq!(viewers, [2, 2, 1]);
    for (path, width) in [("/snapshot.jpg", 160), ("/cam/shed/snapshot.jpg", 224)] {
        let tcp = tokio::net::TcpStream::connect(server.http_addr())
            .await
            .unwrap();
        let body = hyper_get(tcp, path).await;
        let jpeg = camcast::jpeg::inspect(&body).unwrap();
        assert_eq!(u32::from(jpeg.width), width, "{path}");
    }
    let (code, body) = http_get(&server, "/cam/yard/info.json").await;
    assert_eq!(code, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["camera"], "yard");
    assert_eq!(info["width"], 192);
    assert_eq!(info["viewers"], 2);
    let names: Vec<&str> = info["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["door", "yard", "shed"]);
    assert_eq!(info["cameras"][0]["default"], true);
    let (_, body) = http_get(&server, "/info.json").await;
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["camera"], "door", "today's paths: the default camera");
    // Prometheus series per camera, by name.
    let (code, metrics) = http_get(&server, "/metrics").await;
    assert_eq!(code, 200);
    for name in ["door", "yard", "shed"] {
        let captured = format!("camcast_frames_captured_total{{camera=\"{name}\"}}");
        assert!(metrics.contains(&captured), "{captured} in:\n{metrics}");
    }
    // The page, for each camera; without the slash, sent to it.
    let (code, page) = http_get(&server, "/cam/shed/").await;
    assert_eq!(code, 200);
    assert!(page.contains("stream.mjpg"));
    let (code, _) = http_get(&server, "/cam/shed").await;
    assert_eq!(code, 308);
    drop((readers, grpc));
    server.stop().await.unwrap();
}

/// The whole answer's body, for a plain GET whose body has a Content-Length.
async fn hyper_get(mut tcp: tokio::net::TcpStream, path: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{path}");
    answer.split_off(at + 4)
}

#[tokio::test]
async fn http_unknown_cameras_are_404_naming_the_cameras_and_health_is_per_camera() {
    let hub = HubConfig {
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(100),
        ..common::hub_config()
    };
    let (fake, plug) = FakeSource::new(128, 96, Duration::from_millis(20));
    let sources: Vec<Box<dyn FrameSource>> = vec![common::pattern(160, 120, 15.0), Box::new(fake)];
    let server = TestServer::launch_cameras(config(&["door", "porch"], hub), sources).await;
    for path in [
        "/cam/garage/stream.mjpg",
        "/cam/garage/snapshot.jpg",
        "/cam/garage/",
        "/cam/garage/info.json",
        "/cam/garage/healthz",
        "/cam/DOOR/stream.mjpg",
        "/cam/%FF%FE/stream.mjpg",
        "/cam/%2e%2e/info.json",
    ] {
        let (code, body) = http_get(&server, path).await;
        assert!(code == 404 || code == 400, "{path}: {code} {body}");
        if code == 404 {
            assert!(body.contains("door, porch"), "{path}: {body}");
        }
    }
    let (code, body) = http_get(&server, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["cameras"]["porch"]["status"], "ok");

    // The porch camera is unplugged while a viewer watches it: the appliance's health says
    // which camera, the door camera's stays up and streams on.
    let mut porch = mjpeg(&server, "/cam/porch/stream.mjpg").await;
    porch.next_part().await.unwrap().unwrap();
    let mut door = mjpeg(&server, "/cam/door/stream.mjpg").await;
    plug.fail_next_starts(u64::MAX);
    plug.push([Step::Vanish]);
    let porch_cam = server.cameras.get("porch").unwrap().clone();
    porch_cam
        .status
        .subscribe()
        .wait_for(|s| s.state == State::WaitingForCamera)
        .await
        .unwrap();
    let (code, body) = http_get(&server, "/healthz").await;
    assert_eq!(code, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["state"], "waiting for camera");
    assert!(health["detail"]
        .as_str()
        .unwrap()
        .starts_with("camera porch:"));
    assert_eq!(health["cameras"]["door"]["status"], "ok");
    assert_eq!(health["cameras"]["porch"]["status"], "unavailable");
    assert_eq!(http_get(&server, "/cam/door/healthz").await.0, 200);
    assert_eq!(http_get(&server, "/cam/porch/healthz").await.0, 503);
    let mut last = 0;
    for _ in 0..10 {
        let part = door.next_part().await.unwrap().unwrap();
        assert!(part.seq > last);
        last = part.seq;
    }
    plug.fail_next_starts(0);
    porch
        .next_part()
        .await
        .unwrap()
        .expect("the porch camera is back");
    drop((porch, door));
    server.stop().await.unwrap();
}
