//! Hostile request sequences through the real server, on stable (issue 12 item 4). Each case is arbitrary bytes decoded into a sequence
//! of HTTP/1.1 exchanges, gRPC calls and raw HTTP/2 frames (see `hostile/mod.rs`) and played
//! against two servers on loopback, one open and one requiring a token. Every response must be
//! well formed with an allowed status; after each case no viewer is left, capture has stopped,
//! no descriptor leaked, no panic was counted and both servers still answer.
//!
//! `PROPTEST_CASES=N` runs more cases than the default 48 (a few seconds).

mod common;
mod hostile;

use arbitrary::{Arbitrary, Unstructured};
use camcast::protection::Protection;
use common::TestServer;
use hostile::{Sequence, Target};
use proptest::test_runner::{Config, TestCaseError, TestRunner};

fn target(server: &TestServer, tokened: bool) -> Target {
    Target {
        grpc: server.addr,
        http: server.http_addr(),
        hub: server.hub.clone(),
        tokened,
    }
}

#[test]
fn hostile_request_sequences_leave_the_server_whole() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (open, tokened) = rt.block_on(async {
        let config = hostile::config();
        let open = TestServer::launch_with(
            config.clone(),
            Protection::load(&config).unwrap(),
            hostile::pattern(),
        )
        .await;
        let tokened = TestServer::launch_beside(
            &open,
            config.clone(),
            hostile::tokened(&config),
            hostile::pattern(),
        )
        .await;
        (open, tokened)
    });
    let targets = (target(&open, false), target(&tokened, true));
    let descriptors = hostile::descriptor_count();
    let panics = camcast::panics::count();

    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // No shrinking: the servers live across cases, so after a failure (a leaked slot, a
        // wedged task) every later case fails too and shrinking would only wait out timeouts.
        // The failing case's whole sequence is in the message.
        max_shrink_iters: 0,
        ..Config::default()
    });
    let inputs = proptest::collection::vec(proptest::num::u8::ANY, 0..3000);
    let outcome = runner.run(&inputs, |bytes| {
        let seq = Sequence::arbitrary_take_rest(Unstructured::new(&bytes))
            .map_err(|e| TestCaseError::reject(e.to_string()))?;
        rt.block_on(async {
            hostile::play(&seq, &targets.0, &targets.1).await?;
            hostile::settle(&[&targets.0, &targets.1], descriptors).await
        })
        .map_err(|e| TestCaseError::fail(format!("{e}\nsequence: {seq:?}")))?;
        if camcast::panics::count() != panics {
            return Err(TestCaseError::fail(format!(
                "the server panicked (message above)\nsequence: {seq:?}"
            )));
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    // A run that never registered a viewer tested the parsers only, not the hub. Each case
    // holds about eight steps, a fifth of them well-formed viewers: with 16 cases or more,
    // each server admitting none would take a broken generator or server.
    if cases >= 16 {
        for (t, which) in [(&targets.0, "open"), (&targets.1, "tokened")] {
            let c = t.hub.report().counters;
            assert!(
                c.viewers_total > 0 && c.frames_captured > 0,
                "no case reached the {which} server's hub: {c:?}"
            );
        }
    }
    rt.block_on(async {
        tokened.stop().await.unwrap();
        open.stop().await.unwrap();
    });
}
