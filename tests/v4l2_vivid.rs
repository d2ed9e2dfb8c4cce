//! The V4L2 source against real kernel drivers, run inside the test VM (tests/vm/):
//! - vivid at /dev/video0 and /dev/video1 (`modprobe vivid n_devs=2`, .ci/vm-v4l2): raw
//!   YUYV/NV12 capture → camcast's JPEG;
//! - v4l2loopback at /dev/video10 (`modprobe v4l2loopback video_nr=10 exclusive_caps=1`): we
//!   write MJPEG frames into its output side and check what the source passes through.
//!
//! The last tests put the whole server in between: a real gRPC viewer on the guest's loopback.
//!
//! Every test is `#[ignore]`d (run them with `cargo test --test v4l2_vivid -- --ignored`) and also
//! skips, saying so, when its device node is absent, so `--ignored` on a camera-less host passes.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use camcast::frame::FrameOrigin;
use camcast::jpeg;
use camcast::source::v4l2::{controls, FormatChoice, V4l2Config, V4l2Source};
use camcast::source::{FrameSource, SourceError};
use v4l::video::Output;
use v4l::{Device, Format, FourCC};

const VIVID: &str = "/dev/video0";
const LOOPBACK: &str = "/dev/video10";

/// True when `node` exists; otherwise prints why the test is skipped. Inside the test VM
/// (CAMCAST_REQUIRE_DEVICES=1) a missing node fails the test instead: nothing may pass by
/// skipping there.
fn present(node: &str) -> bool {
    let here = Path::new(node).exists();
    if !here && std::env::var_os("CAMCAST_REQUIRE_DEVICES").is_some() {
        panic!("{node} is missing inside the test VM");
    }
    if !here {
        eprintln!("SKIPPED: {node} does not exist (this test runs inside the V4L2 test VM)");
    }
    here
}

fn config(device: &str, width: u32, height: u32, format: FormatChoice) -> V4l2Config {
    V4l2Config {
        width,
        height,
        format,
        ..V4l2Config::new(device)
    }
}

/// Starts the source, grabs `n` frames (skipping bad ones), stops it.
fn capture(
    cfg: V4l2Config,
    n: usize,
) -> (camcast::source::Mode, Vec<camcast::frame::CapturedFrame>) {
    let device = cfg.device.display().to_string();
    let mut src = V4l2Source::new(cfg);
    let mode = src.start().expect("start");
    eprintln!("{device}: {mode}");
    let mut frames = Vec::new();
    let mut bad = 0;
    while frames.len() < n {
        match src.next_frame() {
            Ok(f) => frames.push(f),
            Err(SourceError::BadFrame(why)) if bad < 10 => {
                bad += 1;
                eprintln!("bad frame: {why}");
            }
            Err(e) => panic!("capture failed: {e}"),
        }
    }
    src.stop();
    (mode, frames)
}

fn decoded_size(jpeg: &[u8]) -> (usize, usize) {
    let img = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).expect("decodable JPEG");
    (img.width, img.height)
}

fn check_raw_capture(width: u32, height: u32, format: FormatChoice, fourcc: &str) {
    // vivid's webcam input offers fewer rates at larger sizes (30 fps is not among them at
    // 720p); 10 fps is offered at every size, so the mode is matched exactly.
    let cfg = V4l2Config {
        fps: 10.0,
        ..config(VIVID, width, height, format)
    };
    let (mode, frames) = capture(cfg, 3);
    assert_eq!((mode.width, mode.height), (width, height), "{mode}");
    assert_eq!(mode.pixel_format, fourcc, "{mode}");
    assert!((mode.fps - 10.0).abs() < 0.01, "{mode}");
    for f in &frames {
        assert_eq!(f.origin, FrameOrigin::Encoded);
        assert_eq!((f.width, f.height), (width, height));
        assert_eq!(decoded_size(&f.jpeg), (width as usize, height as usize));
    }
    let age = std::time::SystemTime::now()
        .duration_since(frames[2].captured_at)
        .expect("capture time is not in the future");
    assert!(age < Duration::from_secs(5), "capture time {age:?} old");
}

#[test]
#[ignore = "needs vivid at /dev/video0 (test VM)"]
fn vivid_yuyv_640x480_becomes_decodable_jpeg() {
    if present(VIVID) {
        check_raw_capture(640, 480, FormatChoice::Yuyv, "YUYV");
    }
}

#[test]
#[ignore = "needs vivid at /dev/video0 (test VM)"]
fn vivid_yuyv_1280x720_becomes_decodable_jpeg() {
    if present(VIVID) {
        check_raw_capture(1280, 720, FormatChoice::Yuyv, "YUYV");
    }
}

#[test]
#[ignore = "needs vivid at /dev/video0 (test VM)"]
fn vivid_nv12_640x480_becomes_decodable_jpeg() {
    if present(VIVID) {
        check_raw_capture(640, 480, FormatChoice::Nv12, "NV12");
    }
}

#[test]
#[ignore = "needs vivid at /dev/video0 (test VM)"]
fn vivid_restarts_after_stop_without_leaking_descriptors() {
    if !present(VIVID) {
        return;
    }
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let mut src = V4l2Source::new(config(VIVID, 640, 480, FormatChoice::Yuyv));
    src.start().unwrap();
    src.next_frame().unwrap();
    src.stop();
    let before = fds();
    for _ in 0..5 {
        src.start().expect("the node reopens after stop");
        src.next_frame().unwrap();
        src.stop();
    }
    assert_eq!(fds(), before, "start/stop must not leak file descriptors");
}

#[test]
#[ignore = "needs vivid at /dev/video0 (test VM)"]
fn vivid_controls_apply_by_name_and_unknown_names_are_listed() {
    if !present(VIVID) {
        return;
    }
    let mut cfg = config(VIVID, 640, 480, FormatChoice::Yuyv);
    cfg.controls = vec![("brightness".into(), 100)];
    capture(cfg.clone(), 1);
    let report = camcast::source::v4l2::devices::list_devices()
        .into_iter()
        .find(|r| r.path == Path::new(VIVID))
        .expect("vivid is listed");
    let brightness = report
        .controls
        .iter()
        .find(|c| c.name == "Brightness")
        .expect("vivid has Brightness");
    assert_eq!(brightness.current, Some(100));

    cfg.controls = vec![("No Such Control".into(), 1)];
    let err = V4l2Source::new(cfg).start().unwrap_err().to_string();
    assert!(
        err.contains("no control named") && err.contains("Brightness"),
        "{err}"
    );
}

#[test]
#[ignore = "needs vivid at /dev/video0 (test VM)"]
fn vivid_is_listed_and_picked_for_auto() {
    if !present(VIVID) {
        return;
    }
    let reports = camcast::source::v4l2::devices::list_devices();
    let vivid = reports.iter().find(|r| r.path == Path::new(VIVID)).unwrap();
    assert_eq!(vivid.driver, "vivid");
    assert!(vivid.formats.iter().any(|f| &f.fourcc == b"YUYV"));
    let listing = camcast::source::v4l2::devices::Listing(&reports).to_string();
    eprintln!("{listing}");
    assert!(listing.contains("YUYV"), "{listing}");
    assert!(camcast::source::v4l2::devices::first_capture_device().is_some());
}

#[test]
#[ignore = "needs vivid at /dev/video0 (test VM)"]
fn vivid_disconnect_mid_stream_is_unavailable_and_recovers_after_stop() {
    if !present(VIVID) {
        return;
    }
    let mut src = V4l2Source::new(config(VIVID, 640, 480, FormatChoice::Yuyv));
    src.start().unwrap();
    src.next_frame().unwrap();
    // vivid's "Disconnect" button acts like pulling a USB camera: every call on open handles
    // fails with ENODEV until all of them are closed, then the device is back.
    press_vivid_button("Disconnect");
    let err = (0..10).find_map(|_| src.next_frame().err());
    assert!(matches!(err, Some(SourceError::Unavailable(_))), "{err:?}");
    src.stop();
    src.start()
        .expect("the camera is back once every handle is closed");
    src.next_frame().expect("frames after the simulated replug");
    src.stop();
}

#[test]
#[ignore = "needs vivid at /dev/video0 (test VM)"]
fn vivid_red_pattern_comes_out_red_from_yuyv_and_nv12() {
    if !present(VIVID) {
        return;
    }
    // Catches swapped chroma planes or a wrong stride, which still decode to the right size.
    for format in [FormatChoice::Yuyv, FormatChoice::Nv12] {
        let mut cfg = config(VIVID, 640, 480, format);
        cfg.controls = vec![("Test Pattern".into(), 7), ("OSD Text Mode".into(), 2)];
        let (_, frames) = capture(cfg, 2);
        let img = turbojpeg::decompress(&frames[1].jpeg, turbojpeg::PixelFormat::RGB).unwrap();
        for (x, y) in [(10, 10), (320, 240), (630, 470)] {
            let p = &img.pixels[(y * img.width + x) * 3..][..3];
            assert!(
                p[0] > 200 && p[1] < 60 && p[2] < 60,
                "{format}: pixel ({x},{y}) is {p:?}"
            );
        }
    }
    let mut cfg = config(VIVID, 640, 480, FormatChoice::Yuyv);
    cfg.controls = vec![("Test Pattern".into(), 0), ("OSD Text Mode".into(), 0)];
    capture(cfg, 1);
}

/// Presses one of vivid's test buttons through a second handle.
fn press_vivid_button(name: &str) {
    let dev = Device::with_path(VIVID).unwrap();
    let list = controls::query(&dev).unwrap();
    let button = list
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("vivid has no {name:?} control"));
    controls::set(&dev, button.id, 0).unwrap();
}

#[test]
#[ignore = "needs vivid at /dev/video0 (test VM)"]
fn vivid_corrupt_buffer_is_a_bad_frame_and_capture_goes_on() {
    if !present(VIVID) {
        return;
    }
    let mut src = V4l2Source::new(config(VIVID, 640, 480, FormatChoice::Yuyv));
    src.start().unwrap();
    src.next_frame().unwrap();
    press_vivid_button("Inject V4L2_BUF_FLAG_ERROR");
    let bad = (0..10).find_map(|_| src.next_frame().err());
    assert!(matches!(bad, Some(SourceError::BadFrame(_))), "{bad:?}");
    for _ in 0..3 {
        src.next_frame()
            .expect("frames keep coming after a bad one");
    }
    src.stop();
}

#[test]
#[ignore = "needs vivid at /dev/video0 (test VM)"]
fn vivid_unloads_after_stop_so_nothing_is_held() {
    if !present(VIVID) {
        return;
    }
    let mut src = V4l2Source::new(config(VIVID, 640, 480, FormatChoice::Yuyv));
    src.start().unwrap();
    src.next_frame().unwrap();
    src.stop();
    // rmmod refuses while any file descriptor or mapping of the device is left.
    let status = std::process::Command::new("rmmod").arg("vivid").status();
    let status = match status {
        Ok(status) => status,
        Err(e) if std::env::var_os("CAMCAST_REQUIRE_DEVICES").is_some() => {
            panic!("cannot run rmmod inside the test VM: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no rmmod here ({e})");
            return;
        }
    };
    assert!(status.success(), "vivid still in use after stop()");
    let err = src.start().unwrap_err();
    assert!(matches!(err, SourceError::Unavailable(_)), "{err:?}");
    assert!(std::process::Command::new("modprobe")
        .arg("vivid")
        .status()
        .unwrap()
        .success());
    for _ in 0..50 {
        if Path::new(VIVID).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    src.start().expect("the replugged camera opens again");
    src.next_frame().unwrap();
}

/// Feeds `jpeg` into the loopback's output side about 30 times a second until dropped.
struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Feeder {
    fn start(jpeg: Vec<u8>, width: u32, height: u32) -> Feeder {
        let out = Device::with_path(LOOPBACK).expect("open loopback output");
        let mut fmt = Format::new(width, height, FourCC::new(b"MJPG"));
        fmt.size = width * height * 2; // room for any JPEG of this size
        Output::set_format(&out, &fmt).expect("set loopback output format");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = out;
            while !flag.load(Ordering::Relaxed) {
                // EAGAIN while no reader has a buffer free: try again next tick.
                let _ = out.write(&jpeg);
                std::thread::sleep(Duration::from_millis(33));
            }
        });
        // Give the loopback a frame before the capture side opens (exclusive_caps=1).
        std::thread::sleep(Duration::from_millis(200));
        Feeder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Embedded, so the test binary runs in the VM without the source tree beside it.
fn camera_jpeg() -> Vec<u8> {
    include_bytes!("fixtures/jpeg/valid.jpg").to_vec()
}

fn loopback_roundtrip(written: Vec<u8>) -> Vec<Bytes> {
    let info = jpeg::inspect(&written).expect("fixture is a JPEG");
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let _feeder = Feeder::start(written, w, h);
    let (mode, frames) = capture(config(LOOPBACK, w, h, FormatChoice::Mjpeg), 3);
    assert_eq!(mode.pixel_format, "MJPG", "{mode}");
    frames
        .into_iter()
        .map(|f| {
            assert_eq!(f.origin, FrameOrigin::Camera);
            assert_eq!((f.width, f.height), (w, h));
            f.jpeg
        })
        .collect()
}

#[test]
#[ignore = "needs v4l2loopback at /dev/video10 (test VM)"]
fn loopback_mjpeg_passes_through_byte_for_byte() {
    if !present(LOOPBACK) {
        return;
    }
    let original = camera_jpeg();
    for got in loopback_roundtrip(original.clone()) {
        assert_eq!(
            &got[..],
            &original[..],
            "a valid camera JPEG must arrive untouched"
        );
    }
}

#[test]
#[ignore = "needs v4l2loopback at /dev/video10 (test VM)"]
fn loopback_mjpeg_without_huffman_tables_arrives_repaired() {
    if !present(LOOPBACK) {
        return;
    }
    let stripped = strip_dht(&camera_jpeg());
    assert!(!jpeg::inspect(&stripped).unwrap().has_dht);
    let want = jpeg::repair(Bytes::from(stripped.clone())).unwrap();
    for got in loopback_roundtrip(stripped.clone()) {
        assert_eq!(got, want, "the DHT-less frame must come back repaired");
        assert!(jpeg::inspect(&got).unwrap().has_dht);
    }
}

// ---- Through the whole server: V4L2 source → hub → gRPC → a real tonic viewer (guest loopback).

mod common;

use camcast::client::{self as grpc_client, Received};
use camcast::hub::HubConfig;
use camcast::pb;
use common::{strip_dht, TestServer};

/// Quick retries so the hotplug test sees the camera come back promptly.
fn hotplug_hub() -> HubConfig {
    HubConfig {
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_millis(800),
        ..HubConfig::default()
    }
}

async fn v4l2_server(cfg: V4l2Config) -> TestServer {
    TestServer::start(Box::new(V4l2Source::new(cfg)), hotplug_hub()).await
}

async fn v1_stream(server: &TestServer) -> grpc_client::FrameStream {
    grpc_client::FrameStream::open(server.channel().await, false, "vm-viewer", 0.0)
        .await
        .expect("open v1 stream")
}

async fn next_frame(stream: &mut grpc_client::FrameStream) -> Received {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a frame within 20 s")
        .expect("stream healthy")
        .expect("stream still open")
}

async fn camera_state(server: &TestServer) -> pb::v1::State {
    let info = grpc_client::camera_client(server.channel().await)
        .get_info(pb::v1::GetInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    info.state()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs vivid at /dev/video0 (test VM)"]
async fn grpc_viewer_gets_vivid_yuyv_at_two_sizes_at_the_camera_rate() {
    if !present(VIVID) {
        return;
    }
    // A different rate per size, each one vivid's webcam input offers at that size, so an
    // ignored or misapplied frame interval shows as a wrong rate. Each is slow enough that the
    // emulated guest captures and encodes every frame with room to spare: on the slowest CI
    // host seen (2026-12-02, Intel Xeon, TCG), 720p YUYV kept up with ~4.8 fps and 640x480
    // with 10; 10 fps at 720p failed there for lack of CPU, not for anything camcast did.
    for (w, h, want) in [(640u32, 480u32, 5.0f64), (1280, 720, 2.0)] {
        let cfg = V4l2Config {
            fps: want,
            ..config(VIVID, w, h, FormatChoice::Yuyv)
        };
        let server = v4l2_server(cfg).await;
        let mut stream = v1_stream(&server).await;
        let mut frames = Vec::new();
        while frames.len() < 16 {
            let f = next_frame(&mut stream).await;
            assert_eq!(decoded_size(&f.jpeg), (w as usize, h as usize));
            frames.push(f);
        }
        // The rate from the driver's own timestamps over the later frames (start-up excluded):
        // every captured frame is one seq step, so the interval per step is the camera's period
        // unless frames were lost on the way.
        let (a, b) = (&frames[5], &frames[15]);
        let span = b
            .captured_at
            .unwrap()
            .duration_since(a.captured_at.unwrap())
            .unwrap();
        let steps = b.seq.unwrap() - a.seq.unwrap();
        let fps = steps as f64 / span.as_secs_f64();
        eprintln!("vivid {w}x{h}: {fps:.2} fps over {steps} frames");
        assert!(
            (want * 0.8..=want * 1.25).contains(&fps),
            "{w}x{h}: {fps:.2} fps, want {want}"
        );
        drop(stream);
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs v4l2loopback at /dev/video10 (test VM)"]
async fn grpc_viewer_gets_loopback_mjpeg_byte_identical_or_repaired() {
    if !present(LOOPBACK) {
        return;
    }
    let original = camera_jpeg();
    let stripped = strip_dht(&original);
    let repaired = jpeg::repair(Bytes::from(stripped.clone()))
        .unwrap()
        .to_vec();
    let info = jpeg::inspect(&original).unwrap();
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    for (written, want) in [(original.clone(), original), (stripped, repaired)] {
        let _feeder = Feeder::start(written, w, h);
        let server = v4l2_server(config(LOOPBACK, w, h, FormatChoice::Mjpeg)).await;
        let mut stream = grpc_client::camera_client(server.channel().await)
            .stream_frames(pb::v1::StreamRequest {
                viewer_name: "bytes".into(),
                max_fps: 0.0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for _ in 0..3 {
            let f = stream.message().await.unwrap().unwrap();
            assert_eq!(f.origin, pb::v1::FrameOrigin::Camera as i32);
            assert_eq!(
                &f.jpeg[..],
                &want[..],
                "bytes on the wire = bytes from the camera"
            );
        }
        drop(stream);
        server.stop().await.unwrap();
    }
}

/// Runs a busybox applet in the guest (rmmod/modprobe), returning whether it succeeded.
fn sh(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Removes the loopback camera (rmmod), retrying for up to 20 s: rmmod only succeeds once
/// nothing holds the device, so this also proves the source let go of a silent camera.
async fn unplug_loopback() {
    for _ in 0..200 {
        if sh("rmmod", &["v4l2loopback"]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the source never released the vanished camera");
}

/// Loads v4l2loopback again (its options from /etc/modprobe.d) and waits up to 5 s for the
/// same device node.
async fn replug_loopback() {
    assert!(sh("modprobe", &["v4l2loopback"]), "modprobe v4l2loopback");
    for _ in 0..100 {
        if Path::new(LOOPBACK).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs v4l2loopback at /dev/video10 (test VM)"]
async fn grpc_viewer_survives_camera_removed_and_readded() {
    if !present(LOOPBACK) {
        return;
    }
    let jpeg_bytes = camera_jpeg();
    let info = jpeg::inspect(&jpeg_bytes).unwrap();
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let feeder = Feeder::start(jpeg_bytes.clone(), w, h);
    let server = v4l2_server(config(LOOPBACK, w, h, FormatChoice::Mjpeg)).await;
    let mut stream = v1_stream(&server).await;
    let mut last = 0;
    for _ in 0..3 {
        last = next_frame(&mut stream).await.seq.unwrap();
    }

    // Unplug: the picture stops, then the device node goes away. rmmod only succeeds while
    // nothing holds the device, so it also proves the source lets go of a silent camera.
    drop(feeder);
    unplug_loopback().await;
    assert!(!Path::new(LOOPBACK).exists());
    let mut waiting = false;
    for _ in 0..100 {
        if camera_state(&server).await == pb::v1::State::WaitingForCamera {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        waiting,
        "info must say the server is waiting for the camera"
    );

    // Replug: same node comes back (options from /etc/modprobe.d), pictures flow again to
    // the viewer that stayed connected.
    replug_loopback().await;
    let _feeder = Feeder::start(jpeg_bytes.clone(), w, h);
    let f = next_frame(&mut stream).await;
    assert!(f.seq.unwrap() > last, "new frames after the replug");
    assert_eq!(&f.jpeg[..], &jpeg_bytes[..]);
    assert_eq!(camera_state(&server).await, pb::v1::State::Streaming);
    drop(stream);
    server.stop().await.unwrap();
}

/// The second vivid device (`n_devs=2`, see .ci/vm-v4l2).
const VIVID_2: &str = "/dev/video1";

/// Three cameras in one server (two vivid devices, YUYV encoded here, and the loopback's
/// MJPEG): a viewer on each at once; the loopback camera unplugged (rmmod) while the vivid
/// ones keep streaming, and back after the replug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs vivid n_devs=2 at /dev/video0 and /dev/video1, v4l2loopback at /dev/video10 (test VM)"]
async fn three_cameras_stream_at_once_and_one_unplugged_leaves_the_others_streaming() {
    if !(present(VIVID) && present(VIVID_2) && present(LOOPBACK)) {
        return;
    }
    let jpeg_bytes = camera_jpeg();
    let info = jpeg::inspect(&jpeg_bytes).unwrap();
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let feeder = Feeder::start(jpeg_bytes.clone(), w, h);
    let cameras = [
        ("door", config(VIVID, 640, 480, FormatChoice::Yuyv)),
        ("yard", config(VIVID_2, 640, 480, FormatChoice::Nv12)),
        ("loop", config(LOOPBACK, w, h, FormatChoice::Mjpeg)),
    ];
    let server_config = camcast::config::Config {
        cameras: cameras
            .iter()
            .map(|(name, _)| camcast::config::CameraConfig::named(name.parse().unwrap()))
            .collect(),
        hub: hotplug_hub(),
        ..common::config()
    };
    let sources = cameras
        .into_iter()
        .map(|(_, cfg)| Box::new(V4l2Source::new(cfg)) as Box<dyn FrameSource>)
        .collect();
    let server = TestServer::launch_cameras(server_config, sources).await;
    let mut streams = Vec::new();
    for name in ["door", "yard", "loop"] {
        let stream = grpc_client::FrameStream::open_camera(server.channel().await, name, "vm", 0.0)
            .await
            .expect("open a camera's stream");
        streams.push(stream);
    }
    let mut last = [0u64; 3];
    for _ in 0..3 {
        for (i, stream) in streams.iter_mut().enumerate() {
            let f = next_frame(stream).await;
            last[i] = f.seq.unwrap();
            let size = [(640, 480), (640, 480), (w, h)][i];
            assert_eq!(f.size, Some(size), "camera {i}");
        }
    }
    let states = |info: &pb::v1::CameraInfo| -> Vec<pb::v1::State> {
        info.cameras.iter().map(|c| c.state()).collect()
    };
    let all_info = || async {
        grpc_client::camera_client(server.channel().await)
            .get_info(pb::v1::GetInfoRequest::default())
            .await
            .unwrap()
            .into_inner()
    };
    assert_eq!(states(&all_info().await), [pb::v1::State::Streaming; 3]);

    // Unplug the loopback camera: the source must let go of it for rmmod to succeed.
    drop(feeder);
    unplug_loopback().await;
    let mut waiting = false;
    for _ in 0..100 {
        if states(&all_info().await)[2] == pb::v1::State::WaitingForCamera {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(waiting, "GetInfo says the loopback camera is waiting");
    // The vivid cameras stream on, with new frames.
    for i in 0..2 {
        for _ in 0..5 {
            let seq = next_frame(&mut streams[i]).await.seq.unwrap();
            assert!(seq > last[i], "camera {i} streams on");
            last[i] = seq;
        }
    }
    let s = states(&all_info().await);
    assert_eq!(&s[..2], [pb::v1::State::Streaming; 2]);

    // Replug: its viewer, still connected, gets pictures again.
    replug_loopback().await;
    let _feeder = Feeder::start(jpeg_bytes.clone(), w, h);
    let f = next_frame(&mut streams[2]).await;
    assert!(f.seq.unwrap() > last[2], "new frames after the replug");
    assert_eq!(&f.jpeg[..], &jpeg_bytes[..]);
    drop(streams);
    server.stop().await.unwrap();
}
