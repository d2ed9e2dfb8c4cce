//! camcast-view's network side (`camcast::view::feed`) against a real server: it reconnects by
//! itself when the server restarts, keeps recording across the outage, and gives up only on
//! refusals that retrying cannot fix.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use camcast::config::Config;
use camcast::view::feed::{self, Command, End, Feed, Link, Options};
use common::{eventually, Stopped, TestServer};
use tokio::sync::{mpsc, watch};
use tonic::Code;

fn options(target: String, name: &str, record: Option<std::path::PathBuf>) -> Options {
    Options {
        target,
        client: Default::default(),
        tutorial_api: false,
        camera: String::new(),
        name: name.into(),
        max_fps: 0.0,
        connect_timeout: Duration::from_secs(2),
        record,
    }
}

/// A second server on the address the first one had (the restarted camera), checked against
/// the first one's baseline when it stops.
async fn serve_again_on(first: Stopped, addr: SocketAddr) -> TestServer {
    let config = Config {
        listen: addr,
        ..common::config()
    };
    TestServer::relaunch(first, config, common::pattern(160, 120, 30.0)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_reconnects_after_a_server_restart_and_keeps_recording() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("across-restart.mkv");
    let first = TestServer::pattern(160, 120, 30.0).await;
    let addr = first.addr;
    let (tx, rx) = watch::channel(Feed::default());
    let (commands, cmd_rx) = mpsc::unbounded_channel();
    let opts = options(addr.to_string(), "feed-test", Some(rec.clone()));
    let task = tokio::spawn(feed::run(opts, tx, cmd_rx));

    eventually("frames flow", || {
        let f = rx.borrow();
        let ok = f.received >= 5 && f.link == Link::Live;
        async move { ok }
    })
    .await;
    {
        let f = rx.borrow();
        assert!(f.camera.contains("test-pattern"), "{}", f.camera);
        assert_eq!(f.recording.as_deref(), Some(rec.as_path()));
        assert!(f.frame.as_ref().is_some_and(|fr| fr.seq.is_some()));
    }

    // The camera goes away under its viewer: the invariants are checked when the second
    // server stops, after the feed has quit.
    let first = first.stop_with_viewers().await;
    eventually("the feed says the link is down", || {
        let down = matches!(rx.borrow().link, Link::Down { .. });
        async move { down }
    })
    .await;
    let before = rx.borrow().received;

    let second = serve_again_on(first, addr).await;
    eventually("frames flow again after the restart", || {
        let f = rx.borrow();
        let ok = f.received >= before + 5 && f.link == Link::Live;
        async move { ok }
    })
    .await;
    assert!(
        rx.borrow().recording.is_some(),
        "recording goes on across the outage"
    );

    commands.send(Command::Quit).unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("feed quits promptly")
        .unwrap();
    assert!(matches!(end, End::Quit), "{end:?}");
    let f = rx.borrow().clone();
    assert!(f.finished && f.recording.is_none());
    let bytes = std::fs::read(&rec).unwrap();
    assert_eq!(&bytes[..4], [0x1A, 0x45, 0xDF, 0xA3], "EBML header");
    assert!(
        bytes.len() as u64 > f.received * 100,
        "{} bytes for {} frames",
        bytes.len(),
        f.received
    );
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_retrying_cannot_fix_ends_the_feed() {
    let server = TestServer::pattern(160, 120, 30.0).await;
    let (tx, _rx) = watch::channel(Feed::default());
    let (_commands, cmd_rx) = mpsc::unbounded_channel();
    let too_long = "x".repeat(100); // the server accepts 64 bytes
    let opts = options(server.target(), &too_long, None);
    let end = tokio::time::timeout(Duration::from_secs(10), feed::run(opts, tx, cmd_rx))
        .await
        .expect("no retry loop on INVALID_ARGUMENT");
    match end {
        End::Refused(s) => assert_eq!(s.code(), Code::InvalidArgument),
        other => panic!("expected a refusal, got {other:?}"),
    }
    server.stop().await.unwrap();
}
