//! camcast server: parse the configuration, wire source → hub → gRPC, run until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use camcast::config::{Cli, Command, Config};
use camcast::discovery::{self, Advertisement};
use camcast::grpc::{self, GrpcSettings};
use camcast::hub::Hub;
use camcast::led;
use camcast::source;
use camcast::status::StatusCell;

/// After a shutdown signal, connections get this long to close before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Devices) = cli.command {
        print!(
            "{}",
            camcast::devices::Listing(&camcast::devices::list_devices())
        );
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("camcast: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(config: Config) -> anyhow::Result<()> {
    let status = StatusCell::new();
    // The LED follows the status from the start; on the way out it is switched off and a
    // sysfs LED gets its kernel trigger back.
    let led_stop = CancellationToken::new();
    let led_task = led::spawn_led(&config.led, &status, led_stop.clone());
    let selected = source::select(&config.source, &config.camera).map_err(anyhow::Error::msg)?;
    tracing::info!(source = %selected.source.name(), reason = %selected.reason, "frame source chosen");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        "serving gRPC: WebcamStreaming (seed), camcast.v1.Camera, health, reflection"
    );
    // systemd (Type=notify): READY=1 now that connections queue, STATUS= at state changes,
    // WATCHDOG=1 pings, STOPPING=1 once led_stop fires (shutdown began). No-op outside systemd.
    let sd_task = camcast::systemd::spawn(&status, led_stop.clone(), listener.local_addr()?);
    // mDNS/DNS-SD: announced now that the port is known, withdrawn as soon as shutdown begins.
    let ad = Advertisement::new(
        listener.local_addr()?,
        &selected.source.name(),
        &config.camera,
    );
    let mdns_task = config.mdns.then(|| discovery::spawn(ad, led_stop.clone()));
    let hub = Hub::new(
        selected.source,
        selected.reason,
        config.hub.clone(),
        status.clone(),
    );
    let settings = GrpcSettings {
        max_name_len: config.max_name_len,
        keepalive_interval: config.keepalive_interval,
        keepalive_timeout: config.keepalive_timeout,
        snapshot_timeout: config.snapshot_timeout,
    };
    let served = grpc::serve(
        listener,
        hub,
        status,
        settings,
        shutdown_signal(led_stop.clone()),
    )
    .await;
    led_stop.cancel();
    let _ = led_task.await;
    let _ = sd_task.await;
    if let Some(task) = mdns_task {
        let _ = task.await;
    }
    served.context("gRPC server failed")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM, and arms a watchdog so a stuck connection cannot keep the
/// process alive past [`SHUTDOWN_GRACE`]. The LED is released at once: the watchdog's exit
/// would skip the orderly release.
async fn shutdown_signal(led_stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let which = tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    tracing::info!("{which} received");
    led_stop.cancel();
    tokio::spawn(async {
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::error!("connections still open after {SHUTDOWN_GRACE:?}; exiting anyway");
        std::process::exit(1);
    });
}
