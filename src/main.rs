//! camcast server: parse the configuration, wire source → hub → gRPC, run until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use camcast::auth::Tokens;
use camcast::config::{Cli, Command, Config};
use camcast::discovery::{self, Advertisement};
use camcast::grpc::{self, GrpcSettings};
use camcast::hub::Hub;
use camcast::led;
use camcast::source;
use camcast::status::StatusCell;
use camcast::tls::{self, CertKind, ServerTls};

/// After a shutdown signal, connections get this long to close before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = &cli.command {
        return run_command(command);
    }
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("camcast: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log);
    camcast::panics::install_hook();
    // Bad TLS files or token file are configuration errors: exit 2 before anything starts.
    let security = match load_security(&config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(config, security)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The one-shot subcommands: print or write something, then exit.
fn run_command(command: &Command) -> ExitCode {
    match command {
        Command::Devices => print!("{}", camcast::source::listing::list()),
        Command::GenToken => println!("{}", camcast::auth::generate_token()),
        Command::GenCert {
            dir,
            names,
            client,
            force,
        } => {
            let (kind, names) = match (*client, names.is_empty()) {
                (true, true) => (CertKind::Client, vec!["viewer".to_string()]),
                (true, false) => (CertKind::Client, names.clone()),
                (false, true) => (CertKind::Server, tls::default_server_names()),
                (false, false) => (CertKind::Server, names.clone()),
            };
            match tls::generate(dir, kind, &names, *force) {
                Ok(fp) => {
                    println!("wrote {0}/cert.pem and {0}/key.pem", dir.display());
                    println!("names: {}", names.join(", "));
                    println!("SHA-256 fingerprint: {fp}");
                }
                Err(e) => {
                    eprintln!("camcast gen-cert: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    ExitCode::SUCCESS
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

/// The TLS identity and viewer tokens, loaded and checked at start.
fn load_security(config: &Config) -> anyhow::Result<(Option<ServerTls>, Option<Tokens>)> {
    let tls = match &config.tls {
        Some(files) => Some(ServerTls::load(files, &[b"h2", b"http/1.1"])?),
        None => None,
    };
    let tokens = match &config.token_file {
        Some(path) => Some(Tokens::from_file(path)?),
        None => None,
    };
    Ok((tls, tokens))
}

async fn run(
    config: Config,
    (tls, tokens): (Option<ServerTls>, Option<Tokens>),
) -> anyhow::Result<()> {
    let status = StatusCell::new();
    // The LED follows the status from the start; on the way out it is switched off and a
    // sysfs LED gets its kernel trigger back.
    let led_stop = CancellationToken::new();
    let shutdown = shutdown_signal(led_stop.clone());
    let led_task = led::spawn_led(&config.led, &status, led_stop.clone());
    let selected = source::select(&config.source, &config.camera).map_err(anyhow::Error::msg)?;
    tracing::info!(source = %selected.source.name(), reason = %selected.reason, "frame source chosen");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let settings = GrpcSettings::new(&config, tls, tokens);
    log_serving(&listener.local_addr()?, &settings);
    let http_listener = match config.http {
        Some(addr) => Some(camcast::http::bind(addr).await?),
        None => None,
    };
    // systemd (Type=notify): READY=1 now that connections queue, STATUS= at state changes,
    // WATCHDOG=1 pings, STOPPING=1 once led_stop fires (shutdown began). No-op outside systemd.
    let sd_task = camcast::systemd::spawn(&status, led_stop.clone(), listener.local_addr()?);
    // mDNS/DNS-SD: announced now that the port is known, withdrawn as soon as shutdown begins.
    let mut ad = Advertisement::new(
        listener.local_addr()?,
        &selected.source.name(),
        &config.camera,
    );
    // What a viewer needs to know before connecting: TLS, tokens, the HTTP port, the APIs.
    ad.tls = Some(settings.tls.is_some());
    ad.auth = settings.tokens.as_ref().map(|_| "token".to_string());
    ad.http_port = match &http_listener {
        Some(l) => Some(l.local_addr()?.port()),
        None => None,
    };
    ad.seed_contract = settings.seed_contract;
    let mdns_task = config.mdns.then(|| discovery::spawn(ad, led_stop.clone()));
    let hub = Hub::new(
        selected.source,
        selected.reason,
        config.hub.clone(),
        status.clone(),
    );
    // HTTP stops when the hub closes, which the gRPC server does on SIGINT/SIGTERM.
    let http_task = http_listener.map(|listener| {
        let closed = hub.clone();
        let settings = camcast::http::HttpSettings::new(&config, &settings);
        tokio::spawn(camcast::http::serve(
            listener,
            hub.clone(),
            settings,
            async move { closed.closed().await },
        ))
    });
    let served = grpc::serve(listener, hub, status, settings, shutdown).await;
    if let Some(task) = http_task {
        let _ = task.await;
    }
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

/// One line saying what is served and how it is protected.
fn log_serving(addr: &std::net::SocketAddr, s: &GrpcSettings) {
    let apis = if s.seed_contract {
        "WebcamStreaming (seed), camcast.v1.Camera, health, reflection"
    } else {
        "camcast.v1.Camera, health, reflection (seed contract off)"
    };
    let tls = match &s.tls {
        Some(t) if t.client_ca_pem.is_some() => "on, client certificates required",
        Some(_) => "on",
        None => "off",
    };
    let tokens = match &s.tokens {
        Some(_) => "required",
        None => "off",
    };
    tracing::info!(%addr, tls, tokens, max_conns_per_addr = s.admission.limits().per_address, "serving gRPC: {apis}");
}

/// Resolves on SIGINT or SIGTERM, and arms a watchdog so a stuck connection cannot keep the
/// process alive past [`SHUTDOWN_GRACE`]. The LED is released at once: the watchdog's exit
/// would skip the orderly release.
fn shutdown_signal(led_stop: CancellationToken) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed now, not at first poll: a SIGTERM that arrives while the server is still
    // starting must shut it down cleanly rather than kill it.
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move { shut_down_on(&mut term, &mut int, led_stop).await }
}

async fn shut_down_on(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
    led_stop: CancellationToken,
) {
    let which = tokio::select! {
        _ = int.recv() => "SIGINT",
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
