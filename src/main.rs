//! camcast server: parse the configuration, set up logging and signals, run the server
//! ([`camcast::server::run`]) until SIGINT/SIGTERM, and turn the outcome into an exit status.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use camcast::config::{Cli, Command, Config};
use camcast::server::{self, Listeners};
use camcast::tls::{self, CertKind};

/// Once shutdown has begun, connections get this long to close before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Exit status for a configuration error: bad flags or file, unusable TLS or token file.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = &cli.command {
        return run_command(command);
    }
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("camcast: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&config.log);
    camcast::panics::install_hook();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(serve(config))
}

/// Runs the server until a signal (or a part of the server stopping) ends it.
async fn serve(config: Config) -> ExitCode {
    let shutdown_begun = CancellationToken::new();
    // Installed before anything starts: a SIGTERM while the server is still starting must shut
    // it down cleanly rather than kill it.
    begin_shutdown_on_signal(shutdown_begun.clone());
    arm_watchdog(shutdown_begun.clone());
    let served = match Listeners::bind(&config).await {
        Ok(listeners) => server::run(config, listeners, shutdown_begun).await,
        Err(e) => Err(e),
    };
    match served {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            if e.is_config() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The one-shot subcommands: print or write something, then exit.
fn run_command(command: &Command) -> ExitCode {
    match command {
        Command::Devices { toml: false } => print!("{}", camcast::source::listing::list()),
        Command::Devices { toml: true } => {
            print!(
                "{}",
                camcast::config::camera_tables(&camcast::source::listing::list())
            )
        }
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

/// Begins shutdown at the first SIGINT or SIGTERM.
fn begin_shutdown_on_signal(shutdown_begun: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!("{which} received");
        shutdown_begun.cancel();
    });
}

/// However shutdown began (a signal, a part of the server that stopped), a stuck connection
/// cannot keep the process alive past [`SHUTDOWN_GRACE`].
fn arm_watchdog(shutdown_begun: CancellationToken) {
    tokio::spawn(async move {
        shutdown_begun.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::error!("connections still open after {SHUTDOWN_GRACE:?}; exiting anyway");
        std::process::exit(1);
    });
}
