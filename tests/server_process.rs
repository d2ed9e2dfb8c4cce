//! The `camcast` binary as a process: start-up, a viewer, SIGTERM, exit status.

mod common;

use std::time::Duration;

use camcast::client::{self, FrameStream};
use common::{bin_command, ServerProcess};

#[tokio::test]
async fn sigterm_ends_streams_cleanly_and_exits_zero() {
    let server = ServerProcess::spawn(&[]);
    let channel = client::connect(&server.addr, Duration::from_secs(5))
        .await
        .unwrap();
    let mut stream = FrameStream::open(channel, true, "process-test", 0.0)
        .await
        .unwrap();
    stream.next().await.unwrap().expect("a frame");

    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) }, 0);
    loop {
        match stream.next().await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => panic!("stream should end cleanly, got {e}"),
        }
    }
    // Shutting down with a viewer connected is the point here, so no idle check before it.
    let ended = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let log = ended.log;
    assert!(
        ended.status.success(),
        "exit status {:?}\nlog:\n{log}",
        ended.status
    );
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(
        log.contains("viewer disconnected") && log.contains("frames_sent="),
        "{log}"
    );
}

/// The invariants hold for the binary too: after viewers on every API have come and gone, no
/// viewer is left, capture stops after the linger, the process holds no more descriptors than
/// before, and it exits cleanly.
#[tokio::test]
async fn viewers_on_every_api_leave_the_process_as_they_found_it() {
    let server = ServerProcess::spawn(&["--http-listen", "127.0.0.1:0"]);
    let http = server.http_addr();
    for tutorial_api in [true, false] {
        let channel = client::connect(&server.addr, Duration::from_secs(5))
            .await
            .unwrap();
        let mut stream = FrameStream::open(channel, tutorial_api, "process-test", 0.0)
            .await
            .unwrap();
        stream.next().await.unwrap().expect("a frame");
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut mjpeg = tokio::net::TcpStream::connect(&http).await.unwrap();
    mjpeg
        .write_all(b"GET /stream.mjpg?name=proc HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    mjpeg.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    drop(mjpeg);
    server.stop(&client::ClientOptions::default()).await;
}

#[test]
fn bad_config_file_is_reported_with_its_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("camcast.toml");
    std::fs::write(&path, "[camera]\nfps = 30\nquality = 900\n").unwrap();
    let out = bin_command(env!("CARGO_BIN_EXE_camcast"))
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 3") && stderr.contains("quality must be 1-100"),
        "{stderr}"
    );
}

#[test]
fn viewer_reports_unreachable_server_with_exit_code_3() {
    // Port 1 on loopback: nothing listens there.
    let out = bin_command(env!("CARGO_BIN_EXE_camcast-view"))
        .args(["127.0.0.1:1", "--frames", "1", "--connect-timeout", "2"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

/// Runs a one-shot subcommand and returns its stdout.
fn run_ok(args: &[&str]) -> String {
    let out = bin_command(env!("CARGO_BIN_EXE_camcast"))
        .args(args)
        .output()
        .expect("run camcast");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// First boot as the README describes it: gen-cert and gen-token, then a TLS server with
/// tokens. A wrong token is refused and logged without the secret; the right one gets frames.
#[tokio::test]
async fn generated_cert_and_token_protect_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let printed = run_ok(&["gen-cert", "--dir", d, "--name", "127.0.0.1"]);
    assert!(printed.contains("SHA-256 fingerprint: "), "{printed}");
    let token = run_ok(&["gen-token"]).trim().to_string();
    assert_eq!(token.len(), 64);
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, format!("# kitchen tablet\n{token}\n")).unwrap();
    let (cert, key) = (format!("{d}/cert.pem"), format!("{d}/key.pem"));

    let server = ServerProcess::spawn(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    let addr = server.addr.clone();
    let opts = |token: &str| client::ClientOptions {
        tls: Some(camcast::tls::ClientTlsOptions {
            ca: Some(cert.clone().into()),
            ..Default::default()
        }),
        token: Some(token.to_string()),
        ..Default::default()
    };
    let timeout = Duration::from_secs(10);
    let wrong = client::connect_with(&addr, &opts("not-the-token-but-long-enough"), timeout)
        .await
        .unwrap();
    let refused = FrameStream::open(wrong, false, "intruder", 0.0).await;
    assert_eq!(
        refused.err().map(|e| e.code()),
        Some(tonic::Code::Unauthenticated)
    );
    let right = client::connect_with(&addr, &opts(&token), timeout)
        .await
        .unwrap();
    let mut stream = FrameStream::open(right, false, "tablet", 0.0)
        .await
        .unwrap();
    stream
        .next()
        .await
        .unwrap()
        .expect("a frame over TLS with the token");

    // camcast-view as a user would run it: trusts the camera's certificate, reads the token
    // from a file, saves frames. Without --ca it refuses the self-signed camera.
    let out_dir = dir.path().join("frames");
    let viewer = |extra: &[&str]| {
        let mut c = bin_command(env!("CARGO_BIN_EXE_camcast-view"));
        c.args([
            addr.as_str(),
            "--frames",
            "3",
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .args(["--token-file", token_file.to_str().unwrap()])
        .args(extra)
        .env_remove("CAMCAST_TOKEN");
        c
    };
    let (mut trusting, mut untrusting) = (
        viewer(&["--ca", &cert]),
        viewer(&["--tls-name", "127.0.0.1"]),
    );
    let (ok, refused) = tokio::task::spawn_blocking(move || {
        (trusting.output().unwrap(), untrusting.output().unwrap())
    })
    .await
    .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 3);
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("certificate"), "{why}");

    // Over TLS too, shutdown ends the stream with OK rather than cutting it.
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    while stream.next().await.expect("clean end of stream").is_some() {}
    // Wait off the runtime: the client's connection tasks must run to answer the GOAWAY.
    let ended = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let log = ended.log;
    assert!(ended.status.success(), "{:?}\n{log}", ended.status);
    assert!(
        log.contains("request refused: bad or missing token"),
        "{log}"
    );
    for secret in [token.as_str(), "not-the-token"] {
        assert!(!log.contains(secret), "the log must not contain a token");
    }
}

#[test]
fn unreadable_token_file_is_a_config_error() {
    let out = bin_command(env!("CARGO_BIN_EXE_camcast"))
        .args(["--token-file", "/nonexistent/tokens", "--led", "none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read token file /nonexistent/tokens"),
        "{err}"
    );
}

/// A rogue camera (anything listening where the viewer dials, or answering mDNS) never gets
/// the viewer token: without TLS checked against a certificate, camcast-view refuses before it
/// connects or browses, and says how to do it safely.
#[test]
fn viewer_refuses_to_send_a_token_without_verified_tls() {
    let rogue = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rogue_addr = rogue.local_addr().unwrap().to_string();
    let secret = "rogue-test-token-0123456789abcdef";
    for (case, args) in [
        ("plain text", vec![rogue_addr.as_str()]),
        (
            "unverified TLS",
            vec![rogue_addr.as_str(), "--insecure-skip-verify"],
        ),
        ("no address (mDNS)", vec![]),
    ] {
        let out = bin_command(env!("CARGO_BIN_EXE_camcast-view"))
            .args(&args)
            .args([
                "--frames",
                "1",
                "--connect-timeout",
                "2",
                "--browse-secs",
                "1",
            ])
            .env("CAMCAST_TOKEN", secret)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{case}: {stderr}");
        assert!(
            stderr.contains("refusing to send the viewer token")
                && stderr.contains("--ca")
                && stderr.contains("--insecure-send-token"),
            "{case}: {stderr}"
        );
        assert!(!stderr.contains(secret), "{case}: token in the message");
        assert!(!stderr.contains("looking for cameras"), "{case}: browsed");
    }
    // The rogue was never dialled: the first connection it accepts is this one.
    let mine = std::net::TcpStream::connect(&rogue_addr).unwrap();
    let (_, peer) = rogue.accept().unwrap();
    assert_eq!(peer, mine.local_addr().unwrap(), "camcast-view connected");
}

/// The binary with a file of `[[camera]]` tables: each camera served by name (the flags set
/// the first), an unknown name answered NOT_FOUND with the names; a duplicate name stops it at
/// start with exit code 2.
#[tokio::test]
async fn camera_tables_in_the_config_file_are_served_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("camcast.toml");
    std::fs::write(
        &path,
        "[[camera]]\nname = \"door\"\n\n[[camera]]\nname = \"yard\"\nsource = \"test-pattern\"\nsize = \"160x120\"\n",
    )
    .unwrap();
    let server = ServerProcess::spawn(&["--config", path.to_str().unwrap()]);
    for (camera, size) in [("door", (320, 240)), ("yard", (160, 120)), ("", (320, 240))] {
        let channel = client::connect(&server.addr, Duration::from_secs(5))
            .await
            .unwrap();
        let mut stream = FrameStream::open_camera(channel, camera, "process-test", 0.0)
            .await
            .unwrap();
        let frame = stream.next().await.unwrap().expect("a frame");
        assert_eq!(frame.size, Some(size), "camera {camera:?}");
    }
    let channel = client::connect(&server.addr, Duration::from_secs(5))
        .await
        .unwrap();
    let err = match FrameStream::open_camera(channel, "garage", "process-test", 0.0).await {
        Ok(mut s) => s.next().await.map(|_| ()).unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("door, yard"), "{}", err.message());
    server.stop(&client::ClientOptions::default()).await;

    std::fs::write(
        &path,
        "[[camera]]\nname = \"a\"\n[[camera]]\nname = \"a\"\n",
    )
    .unwrap();
    let out = bin_command(env!("CARGO_BIN_EXE_camcast"))
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("same name"), "{stderr}");
}
