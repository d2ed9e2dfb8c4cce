//! The server, wired in one place: its cameras (one hub each, see [`Cameras`]), the gRPC port
//! and the optional HTTP port under one shared [`Protection`], and around them the status LED,
//! systemd notifications and the mDNS advertisement, all tied to one cancellation token that
//! says "shutdown has begun".
//!
//! The `camcast` binary calls [`run`]; the integration tests call the same [`Server::run`]
//! (through [`Server::new`], to choose their own sources and watch the hubs). The caller binds
//! the ports, so tests can use port 0, and owns the token. Cancelling it shuts every part down
//! at once: the mDNS advertisement is withdrawn, every camera's hub ends its viewer streams and
//! stops capture (once, for every transport), the transports stop accepting and drain (each for
//! at most its drain time), systemd hears STOPPING=1, the LED is switched off.
//!
//! A transport that stops by itself (a TLS setting its server rejects, a panic) cancels the
//! token too: everything else stops and `run` returns an error naming that transport, so the
//! process never lives on half-served.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cameras::{Camera, Cameras};
use crate::config::Config;
use crate::discovery::{self, Advertisement};
use crate::grpc::{self, GrpcSettings};
use crate::http::{self, HttpSettings};
use crate::hub::{Hub, Seats};
use crate::led;
use crate::metrics::{self, Metrics};
use crate::protection::{Protection, ProtectionError};
use crate::source::{self, Selected};
use crate::status::StatusCell;
use crate::systemd;

/// The server's listening sockets, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC port.
    pub grpc: TcpListener,
    /// The HTTP port (page, MJPEG, snapshot, health), if one is served.
    pub http: Option<TcpListener>,
}

/// Where the listeners are bound, with port 0 resolved to the port the system chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    pub grpc: SocketAddr,
    pub http: Option<SocketAddr>,
}

impl Listeners {
    /// Binds the addresses the config names: `listen`, and `[http] listen` when set.
    pub async fn bind(config: &Config) -> Result<Listeners, ServerError> {
        let grpc = bind("gRPC", config.listen).await?;
        let http = match config.http {
            Some(addr) => Some(bind("HTTP", addr).await?),
            None => None,
        };
        Ok(Listeners { grpc, http })
    }

    /// Where each listener is bound.
    pub fn local_addrs(&self) -> io::Result<BoundAddrs> {
        Ok(BoundAddrs {
            grpc: self.grpc.local_addr()?,
            http: self
                .http
                .as_ref()
                .map(TcpListener::local_addr)
                .transpose()?,
        })
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

/// Why the server could not start, or stopped other than by its shutdown token.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A TLS file or the token file cannot be used: a configuration error.
    #[error(transparent)]
    Protection(#[from] ProtectionError),
    /// The configured source is one this build cannot provide.
    #[error("{0}")]
    Source(String),
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("cannot read a listener's address: {0}")]
    Listener(#[from] io::Error),
    /// A transport's serve loop returned before shutdown began.
    #[error("the {part} stopped by itself; the rest of the server was stopped with it")]
    Stopped { part: &'static str },
    #[error("the {part} failed: {source:#}")]
    Failed {
        part: &'static str,
        source: anyhow::Error,
    },
    #[error(
        "the {part} panicked (see the panic logged above); the rest of the server was stopped"
    )]
    Panicked { part: &'static str },
}

impl ServerError {
    /// True for errors in what the user configured (the binary exits with status 2 for them).
    pub fn is_config(&self) -> bool {
        matches!(self, ServerError::Protection(_))
    }
}

/// Serves what `config` describes on `listeners` until `shutdown_begun` is cancelled, or until a
/// part of the server stops by itself (then it cancels `shutdown_begun` and returns why).
/// Must be called within a tokio runtime.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown_begun: CancellationToken,
) -> Result<(), ServerError> {
    Server::from_config(config)?
        .run(listeners, shutdown_begun)
        .await
}

/// A server built but not yet serving: its hubs exist (idle until their first viewer) and its
/// protections are loaded.
pub struct Server {
    config: Config,
    protection: Protection,
    cameras: Cameras,
}

impl Server {
    /// The server `config` describes: TLS identity and tokens loaded, each camera's source
    /// chosen, hubs built. Must be called within a tokio runtime.
    pub fn from_config(config: Config) -> Result<Server, ServerError> {
        let protection = Protection::load(&config)?;
        let mut sources = Vec::with_capacity(config.cameras.len());
        for camera in &config.cameras {
            let selected = source::select(&camera.source, &camera.request)
                .map_err(|e| ServerError::Source(format!("camera {}: {e}", camera.name)))?;
            tracing::info!(camera = %camera.name, source = %selected.source.name(),
                reason = %selected.reason, "frame source chosen");
            sources.push(selected);
        }
        Ok(Server::new(config, protection, sources))
    }

    /// A server with the protections and sources given, one per camera of `config` in its
    /// order (tests; fault injection). Must be called within a tokio runtime.
    pub fn new(config: Config, protection: Protection, sources: Vec<Selected>) -> Server {
        assert_eq!(
            sources.len(),
            config.cameras.len(),
            "one source per configured camera"
        );
        // One set of seats: the viewer caps count across every camera.
        let seats = Seats::new(&config.hub);
        let cameras = config
            .cameras
            .iter()
            .zip(sources)
            .map(|(camera, selected)| {
                let status = StatusCell::new();
                let hub = Hub::with_seats(
                    selected.source,
                    selected.reason,
                    camera.hub(&config.hub),
                    status.clone(),
                    seats.clone(),
                );
                Camera {
                    name: camera.name.clone(),
                    hub,
                    status,
                }
            })
            .collect();
        Server {
            config,
            protection,
            cameras: Cameras::new(cameras),
        }
    }

    /// Every camera, the default first.
    pub fn cameras(&self) -> &Cameras {
        &self.cameras
    }

    /// Serves until `shutdown_begun` is cancelled or a transport stops; see [`run`].
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown_begun: CancellationToken,
    ) -> Result<(), ServerError> {
        let Server {
            config,
            protection,
            cameras,
        } = self;
        let addrs = listeners.local_addrs()?;
        log_serving(addrs.grpc, &config, &protection, &cameras);

        // The appliance's one state: the worst of the cameras' (LED, systemd, gRPC health).
        let (status, status_task) = cameras.overall_status(shutdown_begun.clone());
        // The LED follows the status from the start; on the way out it is switched off and a
        // sysfs LED gets its kernel trigger back.
        let led_task = led::spawn_led(&config.led, &status, shutdown_begun.clone());
        // systemd (Type=notify): READY=1 now that connections queue, STATUS= at state changes,
        // WATCHDOG=1 pings, STOPPING=1 once shutdown begins. No-op outside systemd.
        let sd_task = systemd::spawn(&status, shutdown_begun.clone(), addrs.grpc);
        // mDNS/DNS-SD: announced now that the ports are known, withdrawn once shutdown begins.
        let mdns_task = config.mdns.then(|| {
            let ad = advertisement(&config, &protection, &cameras, addrs);
            discovery::spawn(ad, shutdown_begun.clone())
        });
        // The hubs are shut down here, once, for every transport: each ends its viewers'
        // streams (with an OK status on gRPC, a final boundary on MJPEG) and stops capture.
        let hub_task = tokio::spawn({
            let (cameras, shutdown_begun) = (cameras.clone(), shutdown_begun.clone());
            async move {
                shutdown_begun.cancelled().await;
                tracing::info!("shutting down: ending viewer streams");
                cameras.shutdown().await;
            }
        });
        let mut transports = Parts::new(shutdown_begun.clone());
        let grpc = grpc::serve(
            listeners.grpc,
            cameras.clone(),
            status,
            GrpcSettings::new(&config),
            protection.clone(),
            shutdown_begun.clone().cancelled_owned(),
        );
        transports.spawn("gRPC server", async move {
            grpc.await;
            Ok(())
        });
        if let Some(listener) = listeners.http {
            let metrics = cameras
                .iter()
                .map(|c| metrics::Camera {
                    name: c.name.to_string(),
                    hub: c.hub.clone(),
                })
                .collect();
            let metrics = Metrics::new(metrics, protection.admission.refusals().clone());
            let http = http::serve(
                listener,
                cameras.clone(),
                HttpSettings::new(&config),
                protection,
                Arc::new(metrics),
                shutdown_begun.clone().cancelled_owned(),
            );
            transports.spawn("HTTP server", async move {
                http.await;
                Ok(())
            });
        }
        let outcome = transports.wait().await;

        let _ = hub_task.await;
        if let Some(task) = status_task {
            let _ = task.await;
        }
        let _ = led_task.await;
        let _ = sd_task.await;
        if let Some(task) = mdns_task {
            let _ = task.await;
        }
        outcome
    }
}

/// The long-running parts of a server (its transports). Whichever ends first, for whatever
/// reason, begins shutdown for all; ending before shutdown began is a failure.
struct Parts {
    tasks: JoinSet<anyhow::Result<()>>,
    names: HashMap<tokio::task::Id, &'static str>,
    shutdown_begun: CancellationToken,
}

impl Parts {
    fn new(shutdown_begun: CancellationToken) -> Self {
        Parts {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            shutdown_begun,
        }
    }

    fn spawn(
        &mut self,
        name: &'static str,
        part: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let id = self.tasks.spawn(part).id();
        self.names.insert(id, name);
    }

    /// Waits for every part to end and returns the first failure: a part that returned an
    /// error, panicked, or ended before shutdown began.
    async fn wait(mut self) -> Result<(), ServerError> {
        let mut first_failure = None;
        while let Some(joined) = self.tasks.join_next_with_id().await {
            let began = self.shutdown_begun.is_cancelled();
            let id = match &joined {
                Ok((id, _)) => *id,
                Err(e) => e.id(),
            };
            let part = self.names.get(&id).copied().unwrap_or("server task");
            let failure = match joined {
                Ok((_, Ok(()))) if began => None,
                Ok((_, Ok(()))) => Some(ServerError::Stopped { part }),
                Ok((_, Err(source))) => Some(ServerError::Failed { part, source }),
                Err(_) => Some(ServerError::Panicked { part }),
            };
            if let Some(failure) = failure {
                if !began {
                    tracing::warn!("the {part} ended; shutting the whole server down");
                }
                first_failure.get_or_insert(failure);
            }
            self.shutdown_begun.cancel();
        }
        first_failure.map_or(Ok(()), Err)
    }
}

/// What a viewer needs to know before connecting: TLS, tokens, the HTTP port, the APIs.
fn advertisement(
    config: &Config,
    protection: &Protection,
    cameras: &Cameras,
    addrs: BoundAddrs,
) -> Advertisement {
    let default = cameras.default_camera();
    let request = &config.default_camera().request;
    let mut ad = Advertisement::new(addrs.grpc, &default.hub.report().source, request);
    ad.tls = Some(protection.tls.is_some());
    ad.auth = protection.tokens.as_ref().map(|_| "token".to_string());
    ad.http_port = addrs.http.map(|a| a.port());
    ad.tutorial_api = config.tutorial_api;
    ad.cameras = cameras.names().into_iter().map(String::from).collect();
    ad
}

/// One line saying what is served and how it is protected.
fn log_serving(addr: SocketAddr, config: &Config, protection: &Protection, cameras: &Cameras) {
    let apis = if config.tutorial_api {
        "the tutorial API (WebcamStreaming), camcast.v1.Camera, health, reflection"
    } else {
        "camcast.v1.Camera, health, reflection (tutorial API off)"
    };
    let tls = match &protection.tls {
        Some(t) if t.mutual => "on, client certificates required",
        Some(_) => "on",
        None => "off",
    };
    let tokens = match &protection.tokens {
        Some(_) => "required",
        None => "off",
    };
    let max_conns_per_addr = protection.admission.limits().per_address;
    let cameras = cameras.names().join(", ");
    tracing::info!(%addr, tls, tokens, max_conns_per_addr, %cameras, "serving gRPC: {apis}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part that ends on its own stops the others and is named in the error.
    #[tokio::test]
    async fn a_part_that_stops_by_itself_stops_the_rest() {
        let shutdown_begun = CancellationToken::new();
        let mut parts = Parts::new(shutdown_begun.clone());
        let other_stopped = CancellationToken::new();
        let (waiting, stopped) = (shutdown_begun.clone(), other_stopped.clone());
        parts.spawn("patient part", async move {
            waiting.cancelled().await;
            stopped.cancel();
            Ok(())
        });
        parts.spawn("quitter", async { Ok(()) });
        let err = parts.wait().await.unwrap_err();
        assert!(
            matches!(err, ServerError::Stopped { part: "quitter" }),
            "{err}"
        );
        assert!(shutdown_begun.is_cancelled() && other_stopped.is_cancelled());
    }

    #[tokio::test]
    async fn a_failing_or_panicking_part_is_named_with_its_cause() {
        let mut parts = Parts::new(CancellationToken::new());
        parts.spawn("broken part", async {
            Err(anyhow::anyhow!("bad TLS identity"))
        });
        let err = parts.wait().await.unwrap_err().to_string();
        assert_eq!(err, "the broken part failed: bad TLS identity");

        let mut parts = Parts::new(CancellationToken::new());
        parts.spawn("panicking part", async { panic!("test panic in a part") });
        let err = parts.wait().await.unwrap_err();
        assert!(
            matches!(
                err,
                ServerError::Panicked {
                    part: "panicking part"
                }
            ),
            "{err}"
        );
    }

    /// Parts that end because shutdown began are not failures.
    #[tokio::test]
    async fn parts_ending_after_shutdown_began_are_fine() {
        let shutdown_begun = CancellationToken::new();
        let mut parts = Parts::new(shutdown_begun.clone());
        for name in ["a", "b"] {
            let waiting = shutdown_begun.clone();
            parts.spawn(name, async move {
                waiting.cancelled().await;
                Ok(())
            });
        }
        shutdown_begun.cancel();
        parts.wait().await.unwrap();
    }
}
