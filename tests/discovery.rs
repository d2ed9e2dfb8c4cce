//! mDNS/DNS-SD on this host: the real advertisement found by the real browser, and
//! `camcast-view --list` finding a running `camcast` process.
//!
//! Each test identifies its own server by port: other camcast servers (other tests running at
//! the same time) may be advertising too. Nothing is timed: a browse is repeated until the
//! expected answer arrives or a generous deadline passes.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use camcast::config::Config;
use camcast::discovery::{self, Advertisement, Found};
use common::{bin_command, ServerProcess};

const DEADLINE: Duration = Duration::from_secs(60);
const BROWSE: Duration = Duration::from_secs(2);

/// One advertising test at a time: the no-address test needs to be the only camera around.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn exclusive() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Browses until `pick` finds our camera, or panics at the deadline with what was seen.
fn browse_until(pick: impl Fn(&Found) -> bool) -> Found {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < DEADLINE {
        seen = discovery::browse(BROWSE).expect("mDNS browser starts");
        if let Some(f) = seen.iter().find(|f| pick(f)) {
            return f.clone();
        }
    }
    panic!("not found within {DEADLINE:?}; last browse saw {seen:#?}");
}

/// Browses until `pick` no longer matches anything (after a goodbye).
fn browse_until_gone(pick: impl Fn(&Found) -> bool) {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if !discovery::browse(BROWSE).unwrap().iter().any(&pick) {
            return;
        }
    }
    panic!("still advertised {DEADLINE:?} after stop");
}

fn advertisement(listen: SocketAddr, camera: &str) -> Advertisement {
    let mut ad = Advertisement::new(listen, camera, &Config::default().default_camera().request);
    (ad.width, ad.height, ad.fps) = (320, 240, 12.5);
    (ad.tls, ad.http_port) = (Some(false), Some(8080));
    ad
}

/// The found target is dialable: something listens there (our listener).
fn assert_dialable(f: &Found) {
    let target: SocketAddr = f.target().expect("a target").parse().unwrap();
    TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("cannot dial advertised {target}: {e}"));
}

fn advertise_browse_and_withdraw(bind: &str) {
    let _one = exclusive();
    // A real listener, so the advertised target can be dialled, and a port no other test uses.
    let listener = TcpListener::bind(bind).unwrap();
    let listen = listener.local_addr().unwrap();
    let camera = format!("discovery test {}", std::process::id());
    let advertiser =
        discovery::advertise(&advertisement(listen, &camera)).expect("advertisement starts");
    let ours = |f: &Found| f.port == listen.port();

    let f = browse_until(ours);
    assert!(f.instance.starts_with("camcast on "), "{f:?}");
    let txt = |k: &str| f.txt.get(k).map(String::as_str);
    assert_eq!(txt("camera"), Some(camera.as_str()), "{f:?}");
    assert_eq!(txt("api"), Some("seed,v1"));
    assert_eq!((txt("res"), txt("fps")), (Some("320x240"), Some("12.5")));
    assert_eq!((txt("tls"), txt("http")), (Some("0"), Some("8080")));
    assert_eq!(txt("auth"), None, "unset optional keys stay out");
    let host = format!("-camcast-{}.local.", listen.port());
    assert!(f.host.ends_with(&host), "{f:?}");
    assert_dialable(&f);
    if listen.ip().is_loopback() {
        assert_eq!(
            f.target().unwrap(),
            listen.to_string(),
            "only the bound address"
        );
    }

    advertiser.stop();
    browse_until_gone(ours);
}

/// Loopback: the advertisement of a server bound to 127.0.0.1 goes out on `lo` only (Linux
/// delivers multicast there although `lo` lacks the MULTICAST flag), and is found there.
#[test]
fn advertisement_on_loopback_is_found_with_port_and_txt_then_withdrawn() {
    if mdns_unavailable("advertisement_on_loopback") {
        return;
    }
    advertise_browse_and_withdraw("127.0.0.1:0");
}

/// Every interface: a server bound to [::] is announced on the NIC (and lo), and the target
/// the browser picks, an IPv4 address first, is dialable from here.
#[test]
fn advertisement_on_every_interface_gives_a_dialable_target() {
    if mdns_unavailable("advertisement_on_every_interface") {
        return;
    }
    advertise_browse_and_withdraw("[::]:0");
}

/// Starts `camcast` (320x240 at 15 fps) on 127.0.0.1:0 and returns it with its port. It is
/// killed if the test fails.
fn spawn_server(extra: &[&str]) -> (ServerProcess, u16) {
    let args: Vec<&str> = ["--fps", "15"].iter().chain(extra).copied().collect();
    let server = ServerProcess::spawn(&args);
    let addr: SocketAddr = server.addr.parse().unwrap();
    (server, addr.port())
}

/// The invariants (no viewer left, capture stopped, descriptors back, no panic), then SIGTERM
/// and a clean exit.
fn stop(server: ServerProcess) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(server.stop(&Default::default()));
}

/// `camcast-view --list` finds the running server with its TXT values; a server started with
/// `--no-mdns` at the same time stays out of the very listing that shows the other one.
#[test]
fn viewer_list_finds_a_running_server_but_not_one_with_no_mdns() {
    if mdns_unavailable("viewer_list") {
        return;
    }
    let _one = exclusive();
    let (advertised, port) = spawn_server(&[]);
    let (silent, silent_port) = spawn_server(&["--no-mdns"]);
    let ours = format!("127.0.0.1:{port}");
    let start = Instant::now();
    let listing = loop {
        let out = bin_command(env!("CARGO_BIN_EXE_camcast-view"))
            .args(["--list", "--browse-secs", "2"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(line) = stdout.lines().find(|l| l.ends_with(&ours)) {
            assert_eq!(out.status.code(), Some(0), "{stdout}");
            assert!(
                stdout.starts_with("#  NAME"),
                "a table with a header: {stdout}"
            );
            break (line.to_string(), stdout);
        }
        assert!(
            start.elapsed() < DEADLINE,
            "not listed within {DEADLINE:?}; last --list: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (line, table) = listing;
    for want in ["camcast on ", "test-pattern", "320x240", "15", "seed,v1"] {
        assert!(line.contains(want), "{want:?} missing from {line:?}");
    }
    assert!(
        !table.contains(&format!(":{silent_port}\n")),
        "--no-mdns server listed: {table}"
    );
    stop(advertised);
    stop(silent);
}

/// `camcast-view` with no address, stdin not a terminal, one camera advertising: it finds
/// that camera and watches it.
#[test]
fn viewer_without_an_address_watches_the_only_camera() {
    if mdns_unavailable("viewer_without_an_address") {
        return;
    }
    let _one = exclusive();
    let (server, port) = spawn_server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = loop {
        let out = bin_command(env!("CARGO_BIN_EXE_camcast-view"))
            .args(["--frames", "3", "--out"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        // 7: the browse ended before the new server's answer arrived; ask again.
        if out.status.code() != Some(7) || start.elapsed() > DEADLINE {
            break out;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("at 127.0.0.1:{port}")),
        "watched another camera? {stderr}"
    );
    let frames = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(frames, 3, "{stderr}");
    stop(server);
}

/// mDNS needs setsockopt(IP_MULTICAST_IF) to choose the interface it sends on. qemu-user
/// (`cargo test --target aarch64-unknown-linux-gnu` runs this suite under it) rejects that
/// option with ENOPROTOOPT, so an emulated responder or browser sends nothing (mdns-sd logs it
/// at debug level only). The test process tries the option itself, and where it is refused
/// each test here is skipped, saying why, since the servers it spawns run in the same
/// emulator. The aarch64 advertisement is checked for real by the SD image's boot test
/// (full-system emulation, where the camera's own avahi resolves it).
fn mdns_unavailable(test: &str) -> bool {
    use socket2::{Domain, Socket, Type};
    let probe = Socket::new(Domain::IPV4, Type::DGRAM, None)
        .and_then(|s| s.set_multicast_if_v4(&std::net::Ipv4Addr::UNSPECIFIED));
    match probe {
        Ok(()) => false,
        Err(e) => {
            eprintln!("{test}: SKIPPED: setsockopt(IP_MULTICAST_IF) fails here ({e}): no mDNS (qemu-user?)");
            true
        }
    }
}
