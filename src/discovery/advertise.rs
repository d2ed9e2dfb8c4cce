//! The server's side of discovery: announcing this camera on the LAN, and withdrawing it (with
//! goodbye packets) at shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo};
use tokio_util::sync::CancellationToken;

use super::{API_VERSIONS, SERVICE_TYPE};
use crate::source::CameraRequest;

/// A DNS label (instance name, host name) is at most 63 bytes.
const MAX_LABEL: usize = 63;
/// One TXT string is at most 255 bytes, key and `=` included; leave room for the key.
const MAX_TXT_VALUE: usize = 200;

/// What a server announces. The optional fields are left out of the TXT record when unset.
#[derive(Debug, Clone, PartialEq)]
pub struct Advertisement {
    /// Instance name, unique on the LAN (mdns-sd appends " (2)" on a clash).
    pub instance: String,
    /// Host label for the SRV record (without `.local.`).
    pub host: String,
    /// The address the gRPC server is bound to: unspecified means every interface.
    pub listen: SocketAddr,
    /// The camera or source name (`camera=`): the default camera's source.
    pub camera: String,
    /// The server's camera names (`cams=door,yard`), the default first; as many as fit in a
    /// TXT string (GetInfo lists them all).
    pub cameras: Vec<String>,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// `tls=1|0`: whether the gRPC port needs TLS.
    pub tls: Option<bool>,
    /// `auth=`: the authentication scheme, e.g. `token`.
    pub auth: Option<String>,
    /// `http=`: the HTTP/MJPEG port, when one is served.
    pub http_port: Option<u16>,
    /// Whether the tutorial API is served (`api=seed,v1`, else `api=v1`; older viewers parse
    /// `seed`, so the TXT value keeps that spelling).
    pub tutorial_api: bool,
}

impl Advertisement {
    /// The advertisement for a server bound to `listen`, serving `camera` with the requested
    /// size and rate. Instance and host names come from the machine's host name.
    pub fn new(listen: SocketAddr, camera: &str, request: &CameraRequest) -> Self {
        let host = host_label();
        // Not the bare host name: avahi (on the SD image, on Raspberry Pi OS) already answers
        // for `<host>.local`, and a second responder with a different address set for that
        // name makes avahi rename the host. A name of our own cannot clash with it. A server on
        // another port gets the port too, so that two servers on one machine bound to
        // different addresses do not share (and mix up) one set of address records.
        let suffix = match listen.port() {
            crate::wire::DEFAULT_PORT => "-camcast".to_string(),
            port => format!("-camcast-{port}"),
        };
        Advertisement {
            instance: truncate(&format!("camcast on {host}"), MAX_LABEL),
            host: truncate(&host, MAX_LABEL - suffix.len()) + &suffix,
            listen,
            camera: camera.to_string(),
            cameras: Vec::new(),
            width: request.capture.width,
            height: request.capture.height,
            fps: request.capture.fps,
            tls: None,
            auth: None,
            http_port: None,
            tutorial_api: true,
        }
    }

    /// The TXT record: `txtvers=1`, `api=seed,v1`, `camera=NAME`, `res=WxH`, `fps=N`, and
    /// `cams=NAME,NAME`, `tls=0|1`, `auth=SCHEME`, `http=PORT` when set.
    pub fn txt(&self) -> Vec<(String, String)> {
        let mut txt = vec![
            ("txtvers".to_string(), "1".to_string()),
            (
                "api".to_string(),
                if self.tutorial_api {
                    API_VERSIONS
                } else {
                    "v1"
                }
                .to_string(),
            ),
            ("camera".to_string(), truncate(&self.camera, MAX_TXT_VALUE)),
            ("res".to_string(), format!("{}x{}", self.width, self.height)),
            ("fps".to_string(), format!("{}", self.fps)),
        ];
        if !self.cameras.is_empty() {
            txt.push(("cams".into(), camera_list(&self.cameras)));
        }
        if let Some(tls) = self.tls {
            txt.push(("tls".into(), if tls { "1" } else { "0" }.into()));
        }
        if let Some(auth) = &self.auth {
            txt.push(("auth".into(), truncate(auth, MAX_TXT_VALUE)));
        }
        if let Some(port) = self.http_port {
            txt.push(("http".into(), port.to_string()));
        }
        txt
    }

    /// The mdns-sd service: every interface's addresses when bound to an unspecified address
    /// (IPv4 only for 0.0.0.0), else only the bound address, on its own interface.
    fn service_info(&self) -> Result<ServiceInfo, mdns_sd::Error> {
        let host = format!("{}.local.", self.host);
        let ip = self.listen.ip();
        let port = self.listen.port();
        let txt = self.txt();
        if ip.is_unspecified() {
            let mut info =
                ServiceInfo::new(SERVICE_TYPE, &self.instance, &host, "", port, &txt[..])?
                    .enable_addr_auto();
            if ip.is_ipv4() {
                info.set_interfaces(vec![IfKind::IPv4]);
            }
            Ok(info)
        } else {
            let mut info =
                ServiceInfo::new(SERVICE_TYPE, &self.instance, &host, ip, port, &txt[..])?;
            info.set_interfaces(vec![IfKind::Addr(ip)]);
            Ok(info)
        }
    }
}

/// Camera names, comma-separated, whole names only, as many as fit in one TXT value. (Names
/// are `a-z0-9-`: nothing to escape.)
fn camera_list(names: &[String]) -> String {
    let mut list = String::new();
    for name in names {
        if list.len() + 1 + name.len() > MAX_TXT_VALUE {
            break;
        }
        if !list.is_empty() {
            list.push(',');
        }
        list.push_str(name);
    }
    list
}

/// A running advertisement. [`Advertiser::stop`] sends the goodbye packets.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
}

/// Starts announcing `ad`. On failure logs a warning and returns `None`: a box without
/// multicast still serves viewers who know its address.
pub fn advertise(ad: &Advertisement) -> Option<Advertiser> {
    match try_advertise(ad) {
        Ok(a) => {
            tracing::info!(
                instance = %ad.instance,
                port = ad.listen.port(),
                "mDNS: advertising {SERVICE_TYPE}"
            );
            Some(a)
        }
        Err(e) => {
            tracing::warn!("mDNS: not advertising ({e}); viewers need the address");
            None
        }
    }
}

fn try_advertise(ad: &Advertisement) -> Result<Advertiser, mdns_sd::Error> {
    let info = ad.service_info()?;
    let fullname = info.get_fullname().to_string();
    let daemon = ServiceDaemon::new()?;
    log_daemon_events(&daemon);
    daemon.register(info)?;
    Ok(Advertiser { daemon, fullname })
}

/// Socket errors, name changes and where the service went out surface only as daemon events:
/// log them, and warn when nothing has gone out after a while (no usable interface).
fn log_daemon_events(daemon: &ServiceDaemon) {
    let Ok(events) = daemon.monitor() else { return };
    let spawned = std::thread::Builder::new()
        .name("mdns-events".into())
        .spawn(move || watch_events(events));
    if let Err(e) = spawned {
        tracing::warn!("mDNS: cannot watch the responder's events: {e}");
    }
}

/// How long after registering an advertisement that went out nowhere is worth a warning.
const NOTHING_SENT_WARNING: Duration = Duration::from_secs(10);

fn watch_events(events: mdns_sd::Receiver<DaemonEvent>) {
    let mut announced_on = std::collections::BTreeSet::new();
    let warn_at = Instant::now() + NOTHING_SENT_WARNING;
    loop {
        let event = match warn_at.checked_duration_since(Instant::now()) {
            Some(left) if announced_on.is_empty() => match events.recv_timeout(left) {
                Err(mdns_sd::RecvTimeoutError::Timeout) => {
                    tracing::warn!(
                        "mDNS: not announced on any interface after {NOTHING_SENT_WARNING:?}: \
                         no up, multicast-capable interface found (or netlink not allowed)"
                    );
                    continue;
                }
                other => other.ok(),
            },
            _ => events.recv().ok(),
        };
        // None: the daemon shut down and dropped the sender.
        let Some(event) = event else { return };
        match event {
            DaemonEvent::Announce(_, at) => {
                // `at` is "host:interface".
                let interface = at.rsplit(':').next().unwrap_or(&at).to_string();
                if announced_on.insert(interface.clone()) {
                    tracing::info!(%interface, "mDNS: announced");
                }
            }
            DaemonEvent::Error(e) => tracing::warn!("mDNS: {e}"),
            DaemonEvent::NameChange(c) => {
                tracing::warn!(from = %c.original, to = %c.new_name, "mDNS: name taken on the LAN, renamed")
            }
            _ => {}
        }
    }
}

impl Advertiser {
    /// Unregisters (goodbye packets, so browsers drop this camera at once) and stops the
    /// responder. Blocks for up to a second.
    pub fn stop(self) {
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
        tracing::info!("mDNS: advertisement withdrawn");
    }
}

/// Advertises `ad` until `stop` is cancelled (shutdown begins), then withdraws it.
pub fn spawn(ad: Advertisement, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let advertiser = tokio::task::spawn_blocking(move || advertise(&ad))
            .await
            .ok()
            .flatten();
        let Some(advertiser) = advertiser else { return };
        stop.cancelled().await;
        let _ = tokio::task::spawn_blocking(move || advertiser.stop()).await;
    })
}

/// This machine's host name as a DNS label: lowercase letters, digits and hyphens.
fn host_label() -> String {
    label_from(&crate::host::name().unwrap_or_default())
}

fn label_from(raw: &str) -> String {
    let first = raw.split('.').next().unwrap_or_default();
    let label: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "camcast".into()
    } else {
        label.to_string()
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Config;

    #[test]
    fn the_camera_names_are_listed_whole_as_many_as_fit() {
        let mut ad = ad("[::]:1234");
        ad.cameras = vec!["door".into(), "yard".into()];
        assert!(ad.txt().contains(&("cams".into(), "door,yard".into())));
        let many: Vec<String> = (0..20).map(|i| format!("{i:0>32}")).collect();
        let list = camera_list(&many);
        assert!(list.len() <= MAX_TXT_VALUE);
        assert_eq!(list.split(',').count(), 6, "whole names only: {list}");
        assert!(list.split(',').all(|n| n.len() == 32));
    }

    fn ad(listen: &str) -> Advertisement {
        let camera = Config::default().default_camera().request.clone();
        let mut ad = Advertisement::new(listen.parse().unwrap(), "HD Pro Webcam C920", &camera);
        ad.fps = 12.5;
        ad
    }

    fn txt_map(pairs: &[(String, String)]) -> BTreeMap<&str, &str> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn txt_record_has_the_documented_keys_and_only_set_optionals() {
        let mut a = ad("[::]:1234");
        let txt = a.txt();
        let m = txt_map(&txt);
        assert_eq!(m["txtvers"], "1");
        assert_eq!(m["api"], "seed,v1");
        assert_eq!(m["camera"], "HD Pro Webcam C920");
        assert_eq!(m["res"], "640x480");
        assert_eq!(m["fps"], "12.5");
        assert!(!m.contains_key("tls") && !m.contains_key("auth") && !m.contains_key("http"));

        (a.tls, a.auth, a.http_port, a.fps) = (Some(true), Some("token".into()), Some(8080), 30.0);
        let txt = a.txt();
        let m = txt_map(&txt);
        assert_eq!(
            (m["tls"], m["auth"], m["http"], m["fps"]),
            ("1", "token", "8080", "30")
        );
        a.tutorial_api = false;
        assert_eq!(txt_map(&a.txt())["api"], "v1");
    }

    #[test]
    fn long_names_are_cut_to_dns_limits_at_character_boundaries() {
        let mut a = ad("[::]:1234");
        a.camera = "é".repeat(300);
        let txt = a.txt();
        let camera = &txt_map(&txt)["camera"];
        assert!(camera.len() <= MAX_TXT_VALUE && camera.chars().all(|c| c == 'é'));
        // mdns-sd rejects TXT strings over 255 bytes, so this must build.
        a.service_info().expect("a valid service");
        assert_eq!(label_from("My_Pi.lan"), "my-pi");
        assert_eq!(label_from(""), "camcast");
        assert!(Advertisement::new(
            "[::]:1".parse().unwrap(),
            "x",
            &Config::default().default_camera().request
        )
        .instance
        .starts_with("camcast on "));
    }

    #[test]
    fn service_info_carries_port_txt_and_the_bound_address() {
        let info = ad("127.0.0.1:4321").service_info().unwrap();
        assert_eq!(info.get_port(), 4321);
        assert_eq!(info.get_type(), SERVICE_TYPE);
        assert_eq!(info.get_property_val_str("api"), Some("seed,v1"));
        assert_eq!(info.get_property_val_str("res"), Some("640x480"));
        assert!(!info.is_addr_auto());
        assert_eq!(
            info.get_addresses_v4().into_iter().collect::<Vec<_>>(),
            [&std::net::Ipv4Addr::LOCALHOST]
        );
        let any = ad("[::]:1234").service_info().unwrap();
        assert!(
            any.is_addr_auto(),
            "unspecified address: every interface's addresses"
        );
        assert!(
            any.get_hostname().ends_with("-camcast.local."),
            "{}",
            any.get_hostname()
        );
        let other_port = ad("127.0.0.1:4321").host;
        assert!(other_port.ends_with("-camcast-4321"), "{other_port}");
    }
}
