//! Fault injection through the whole server: a chaos-wrapped source that errors, stalls and
//! corrupts frames. Viewers keep their streams and get only valid frames, gRPC health goes
//! NOT_SERVING while the source is down and SERVING again after, and the LED shows the fault.

mod common;

use std::time::Duration;

use camcast::client::FrameStream;
use camcast::grpc::V1_SERVICE;
use camcast::hub::{Hub, HubConfig};
use camcast::led::{self, RecordingLed};
use camcast::source::chaos::{ChaosConfig, ChaosSource, Fault};
use camcast::source::fake::{FakeSource, Step};
use camcast::source::FrameSource;
use camcast::status::{State, StatusCell};
use common::{decode, pattern, TestServer};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// A server on an ephemeral port whose status cell the test can see (for the LED).
struct Rig {
    server: TestServer,
    target: String,
    hub: Hub,
    status: StatusCell,
}

impl Rig {
    async fn start(source: Box<dyn FrameSource>, retry: Duration) -> Rig {
        let hub = HubConfig {
            retry_min: retry,
            retry_max: retry,
            ..common::hub_config()
        };
        let server = TestServer::start(source, hub).await;
        Rig {
            target: server.target(),
            hub: server.hub.clone(),
            status: server.status.clone(),
            server,
        }
    }

    async fn viewer(&self, tutorial_api: bool, name: &str) -> FrameStream {
        let channel = camcast::client::connect(&self.target, Duration::from_secs(5))
            .await
            .unwrap();
        FrameStream::open(channel, tutorial_api, name, 0.0)
            .await
            .unwrap()
    }

    async fn finish(self) {
        self.server.stop().await.unwrap();
    }
}

fn small_pattern() -> Box<dyn FrameSource> {
    pattern(160, 120, 30.0)
}

/// Random errors and corrupt frames (seeded): both viewers stay connected and every frame they
/// get decodes, until the server has seen both kinds of fault several times.
#[tokio::test]
async fn viewers_keep_getting_valid_frames_through_random_faults() {
    let chaos: ChaosConfig = "error=0.03,stall=0,corrupt=0.2,seed=7".parse().unwrap();
    let source = Box::new(ChaosSource::new(small_pattern(), chaos));
    let rig = Rig::start(source, Duration::from_millis(20)).await;
    let mut viewers = [
        rig.viewer(false, "v1").await,
        rig.viewer(true, "tutorial").await,
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last_seq = 0;
    let mut frames = 0;
    loop {
        for (i, v) in viewers.iter_mut().enumerate() {
            let f = v.next().await.expect("stream kept").expect("not ended");
            assert_eq!(
                decode(&f.jpeg),
                (160, 120),
                "only valid frames reach viewers"
            );
            if i == 0 {
                let seq = f.seq.unwrap();
                assert!(seq > last_seq, "frames only move forward");
                last_seq = seq;
            }
            frames += 1;
        }
        let c = rig.hub.report().counters;
        if c.frames_dropped >= 5 && c.capture_errors >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "faults not seen in 60 s: {c:?}"
        );
    }
    assert!(frames > 10);
    drop(viewers);
    rig.finish().await;
}

/// Waits for a status change; panics after 20 s or if the status cell is gone.
async fn within<T, E: std::fmt::Debug>(f: impl std::future::Future<Output = Result<T, E>>) {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("state reached within 20 s")
        .expect("status cell alive");
}

/// Health of the camera service as a stream of changes.
async fn health_watch(target: &str) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let channel = camcast::client::connect(target, Duration::from_secs(5))
        .await
        .unwrap();
    HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: V1_SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Reads health updates until `want` arrives; panics after 20 s.
async fn health_becomes(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
    want: ServingStatus,
) {
    let wait = async {
        loop {
            let r = watch.message().await.unwrap().expect("health stream open");
            if r.status == want as i32 {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("health never became {want:?}"));
}

/// A stall (no frame for the V4L2 timeout) then a failure, in that order: health goes
/// NOT_SERVING for each and back to SERVING, and the one viewer's stream carries on.
#[tokio::test]
async fn health_follows_stall_and_failure_and_the_viewer_recovers() {
    let plan = [
        vec![Fault::None; 5],
        vec![Fault::Stall],
        vec![Fault::None; 5],
    ]
    .concat();
    let plan = plan.into_iter().chain([Fault::Failed]);
    let source = Box::new(ChaosSource::planned(small_pattern(), plan));
    // Each NOT_SERVING lasts the retry delay, and the health stream and this test must each
    // see it before it ends: 1 s leaves room for a slow machine (qemu-user in CI).
    let rig = Rig::start(source, Duration::from_secs(1)).await;
    let mut states = rig.status.subscribe();
    let mut health = health_watch(&rig.target).await;
    let mut viewer = rig.viewer(false, "patient").await;
    let first = viewer.next().await.unwrap().unwrap().seq.unwrap();
    health_becomes(&mut health, ServingStatus::Serving).await;

    // The stall: the source gives up after FRAME_TIMEOUT and counts as unplugged.
    health_becomes(&mut health, ServingStatus::NotServing).await;
    assert_eq!(rig.status.get().state, State::WaitingForCamera);
    health_becomes(&mut health, ServingStatus::Serving).await;
    // The failure.
    within(states.wait_for(|s| s.state == State::Fault)).await;
    assert!(rig.status.get().detail.contains("injected failure"));
    health_becomes(&mut health, ServingStatus::NotServing).await;
    health_becomes(&mut health, ServingStatus::Serving).await;

    // Frames flow again on the same stream, newer than before the faults.
    let mut seq = first;
    while rig.hub.report().counters.capture_errors < 2 || seq <= first + 10 {
        seq = viewer
            .next()
            .await
            .unwrap()
            .expect("stream kept")
            .seq
            .unwrap();
    }
    assert_eq!(rig.hub.report().counters.capture_errors, 2);
    // An open health Watch stream holds graceful shutdown up (tonic-health never ends it).
    drop((health, viewer));
    rig.finish().await;
}

/// The LED plays the fault pattern (5 Hz) while the source is failing, and the streaming
/// heartbeat (2 pulses a second) otherwise. The fault is held for 2 s by the retry delay, so
/// the LED toggles about 20 times in it; the heartbeat would toggle at most 9 times in 2 s.
///
/// The failure is cued only once the viewer has its first frame: a failure planned a few
/// frames after start could come before a slow viewer's first read, which clears the frame
/// slot, so that viewer's first frame (and the test's first look at the state) came after the
/// recovery, and the fault was never seen (an aarch64 CI run under qemu-user, 2026-12-02).
#[tokio::test]
async fn led_blinks_fault_while_the_source_fails() {
    let (source, camera) = FakeSource::new(160, 120, Duration::from_millis(33));
    let rig = Rig::start(Box::new(source), Duration::from_secs(2)).await;
    let fake = RecordingLed::new();
    let led_stop = CancellationToken::new();
    let led_task = led::spawn(Box::new(fake.clone()), &rig.status, led_stop.clone());
    let mut states = rig.status.subscribe();
    let mut viewer = rig.viewer(false, "v").await;
    viewer.next().await.unwrap().unwrap();

    camera.push([Step::Fail]);
    within(states.wait_for(|s| s.state == State::Fault)).await;
    let fault_at = tokio::time::Instant::now();
    within(states.wait_for(|s| s.state == State::Streaming)).await;
    let recovered_at = tokio::time::Instant::now();
    viewer.next().await.unwrap().expect("frames after recovery");
    led_stop.cancel();
    led_task.await.unwrap();

    let toggles = fake
        .transitions()
        .iter()
        .filter(|(t, _)| *t >= fault_at && *t < recovered_at)
        .count();
    assert!(
        toggles >= 12,
        "fast blink during the {:?} fault: {toggles} LED changes",
        recovered_at - fault_at
    );
    drop(viewer);
    rig.finish().await;
}
