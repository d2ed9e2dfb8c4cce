//! LAN discovery over mDNS/DNS-SD (`_camcast._tcp.local.`), with the `mdns-sd` crate.
//!
//! - The server [`advertise`]s itself: an instance name ("camcast on HOST"), its gRPC port and a
//!   TXT record saying what it serves (see [`Advertisement::txt`] for the keys).
//! - `camcast-view` [`browse`]s for a while, then [`choose`]s one camera (or prints them all).
//!
//! Advertising never stops the camera: any failure is a logged warning.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio_util::sync::CancellationToken;

use crate::source::CameraRequest;

/// The DNS-SD service type camcast servers register.
pub const SERVICE_TYPE: &str = "_camcast._tcp.local.";
/// The gRPC APIs every camcast server speaks, as listed in the `api` TXT key. `seed` is the
/// tutorial API's token on the wire, kept as older viewers parse it.
pub const API_VERSIONS: &str = "seed,v1";
/// How long `camcast-view` listens for answers by default.
pub const DEFAULT_BROWSE: Duration = Duration::from_secs(2);
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
    /// The camera or source name (`camera=`).
    pub camera: String,
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
            crate::client::DEFAULT_PORT => "-camcast".to_string(),
            port => format!("-camcast-{port}"),
        };
        Advertisement {
            instance: truncate(&format!("camcast on {host}"), MAX_LABEL),
            host: truncate(&host, MAX_LABEL - suffix.len()) + &suffix,
            listen,
            camera: camera.to_string(),
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
    /// `tls=0|1`, `auth=SCHEME`, `http=PORT` when set.
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

/// A camera found on the LAN.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Instance name, e.g. "camcast on frontdoor".
    pub instance: String,
    /// The SRV target host, e.g. `frontdoor-camcast.local.`.
    pub host: String,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub txt: BTreeMap<String, String>,
}

impl Found {
    /// `ADDRESS:PORT` for [`crate::client::connect`]: IPv4 first, then IPv6. IPv6 link-local
    /// addresses are skipped (they need a scope id that a URI cannot carry); `None` when the
    /// camera has nothing else.
    pub fn target(&self) -> Option<String> {
        self.addresses
            .iter()
            .filter_map(|ip| address_rank(ip).map(|rank| (rank, ip)))
            .min()
            .map(|(_, ip)| SocketAddr::new(*ip, self.port).to_string())
    }

    fn txt_or_dash(&self, key: &str) -> &str {
        self.txt.get(key).map_or("-", String::as_str)
    }
}

/// Lower is better; `None`: not dialable without a scope id.
fn address_rank(ip: &IpAddr) -> Option<u8> {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some(2),
        IpAddr::V4(v4) if v4.is_link_local() => Some(1),
        IpAddr::V4(_) => Some(0),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => None,
        IpAddr::V6(v6) if v6.is_loopback() => Some(4),
        IpAddr::V6(_) => Some(3),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot start mDNS: {0}")]
    Mdns(#[from] mdns_sd::Error),
}

/// Answers seen so far, keyed by (full instance name, port): the same instance heard on
/// several interfaces is one camera, but two servers may share a name on different links.
type Seen = BTreeMap<(String, u16), Found>;

/// Listens for `timeout` and returns every camera that answered, one entry per instance,
/// sorted by name.
pub fn browse(timeout: Duration) -> Result<Vec<Found>, DiscoveryError> {
    let daemon = ServiceDaemon::new()?;
    let events = daemon.browse(SERVICE_TYPE)?;
    let deadline = Instant::now() + timeout;
    let mut found = Seen::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(ServiceEvent::ServiceResolved(s)) => merge(&mut found, s.as_ref()),
            Ok(ServiceEvent::ServiceRemoved(_, fullname)) => {
                found.retain(|(name, _), _| *name != fullname);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    if let Ok(done) = daemon.shutdown() {
        let _ = done.recv_timeout(Duration::from_secs(1));
    }
    let mut list: Vec<Found> = found.into_values().collect();
    // By instance name ("camcast on pi" before "camcast on pi (2)"), not by full DNS name.
    list.sort_by(|a, b| (&a.instance, a.port).cmp(&(&b.instance, b.port)));
    Ok(list)
}

/// Adds a resolved service, merging addresses with an earlier answer for the same instance.
fn merge(found: &mut Seen, s: &mdns_sd::ResolvedService) {
    let txt = s
        .txt_properties
        .iter()
        .map(|p| (p.key().to_string(), p.val_str().to_string()));
    let addresses = s.addresses.iter().map(|ip| ip.to_ip_addr());
    add_answer(found, &s.fullname, &s.host, s.port, txt, addresses);
}

fn add_answer(
    found: &mut Seen,
    fullname: &str,
    host: &str,
    port: u16,
    txt: impl Iterator<Item = (String, String)>,
    addresses: impl Iterator<Item = IpAddr>,
) {
    let entry = found
        .entry((fullname.to_string(), port))
        .or_insert_with(|| Found {
            instance: instance_name(fullname),
            host: host.to_string(),
            addresses: Vec::new(),
            port,
            txt: BTreeMap::new(),
        });
    entry.host = host.to_string();
    entry.txt.extend(txt);
    for ip in addresses {
        if !entry.addresses.contains(&ip) {
            entry.addresses.push(ip);
        }
    }
    entry.addresses.sort();
}

/// "camcast on pi._camcast._tcp.local." → "camcast on pi" (DNS escapes undone).
fn instance_name(fullname: &str) -> String {
    let name = fullname
        .strip_suffix(SERVICE_TYPE)
        .unwrap_or(fullname)
        .trim_end_matches('.');
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// The found cameras as a table with a numbered first column.
pub fn table(found: &[Found]) -> String {
    let mut rows = vec![[
        "#".to_string(),
        "NAME".into(),
        "CAMERA".into(),
        "SIZE".into(),
        "FPS".into(),
        "API".into(),
        "ADDRESS".into(),
    ]];
    for (i, f) in found.iter().enumerate() {
        rows.push([
            (i + 1).to_string(),
            f.instance.clone(),
            f.txt_or_dash("camera").to_string(),
            f.txt_or_dash("res").to_string(),
            f.txt_or_dash("fps").to_string(),
            f.txt_or_dash("api").to_string(),
            f.target()
                .unwrap_or_else(|| "(IPv6 link-local only)".into()),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// Why no camera could be picked. [`ChooseError::exit_code`] is what `camcast-view` exits with.
#[derive(Debug, thiserror::Error)]
pub enum ChooseError {
    #[error(
        "no camera found: searched the LAN for {SERVICE_TYPE} by mDNS for {:.1} s. Is the camera \
         on this network, running, and advertising (not --no-mdns)? Or give its address: \
         camcast-view HOST[:PORT]",
        waited.as_secs_f64()
    )]
    NoneFound { waited: Duration },
    #[error(
        "found only cameras without a usable address (IPv6 link-local only):\n{table}\
         give an address: camcast-view HOST[:PORT]"
    )]
    NoUsableAddress { table: String },
    #[error("{count} cameras found and no terminal to ask which one:\n{table}pick one: camcast-view ADDRESS")]
    Several { count: usize, table: String },
    #[error("no camera chosen: {0}")]
    NotChosen(String),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

/// `camcast-view`'s exit status when no camera was found (documented in its `--help`).
pub const EXIT_NONE_FOUND: u8 = 7;

impl ChooseError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ChooseError::NoneFound { .. } | ChooseError::NoUsableAddress { .. } => EXIT_NONE_FOUND,
            ChooseError::Several { .. } | ChooseError::NotChosen(_) => 2,
            ChooseError::Discovery(_) => 1,
        }
    }
}

/// Where to ask the user which camera to watch, if anywhere.
pub enum Prompt<'a> {
    /// stdin is not a terminal: never ask.
    Never,
    /// Ask on `output` (stderr) and read the answer from `input`.
    Ask {
        input: &'a mut dyn BufRead,
        output: &'a mut dyn Write,
    },
}

/// The policy for `camcast-view` with no address: exactly one usable camera → it; none → an
/// error saying what was searched; several → a numbered list and a question, or an error
/// listing them when there is nobody to ask.
pub fn choose(found: Vec<Found>, waited: Duration, prompt: Prompt) -> Result<Found, ChooseError> {
    if found.is_empty() {
        return Err(ChooseError::NoneFound { waited });
    }
    let (usable, unusable): (Vec<Found>, Vec<Found>) =
        found.into_iter().partition(|f| f.target().is_some());
    match usable.len() {
        0 => Err(ChooseError::NoUsableAddress {
            table: table(&unusable),
        }),
        1 => Ok(usable.into_iter().next().expect("one")),
        count => match prompt {
            Prompt::Never => Err(ChooseError::Several {
                count,
                table: table(&usable),
            }),
            Prompt::Ask { input, output } => ask(usable, input, output),
        },
    }
}

fn ask(
    mut usable: Vec<Found>,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> Result<Found, ChooseError> {
    let io = |e: std::io::Error| ChooseError::NotChosen(e.to_string());
    write!(
        output,
        "{} cameras found:\n{}",
        usable.len(),
        table(&usable)
    )
    .map_err(io)?;
    loop {
        write!(output, "watch which one? [1-{}]: ", usable.len()).map_err(io)?;
        output.flush().map_err(io)?;
        let mut line = String::new();
        if input.read_line(&mut line).map_err(io)? == 0 {
            return Err(ChooseError::NotChosen("end of input".into()));
        }
        match line.trim().parse::<usize>() {
            Ok(n) if (1..=usable.len()).contains(&n) => return Ok(usable.swap_remove(n - 1)),
            _ => writeln!(
                output,
                "{:?} is not a number from 1 to {}",
                line.trim(),
                usable.len()
            )
            .map_err(io)?,
        }
    }
}

/// Browses, chooses (asking on stderr when stdin is a terminal) and returns the target to
/// connect to. Progress goes to stderr.
pub fn find_target(timeout: Duration) -> Result<String, ChooseError> {
    eprintln!(
        "no address given: looking for cameras on the LAN ({SERVICE_TYPE}, {:.1} s)",
        timeout.as_secs_f64()
    );
    let found = browse(timeout)?;
    let stdin = std::io::stdin();
    let (mut input, mut stderr) = (stdin.lock(), std::io::stderr());
    let prompt = if stdin.is_terminal() {
        Prompt::Ask {
            input: &mut input,
            output: &mut stderr,
        }
    } else {
        Prompt::Never
    };
    let chosen = choose(found, timeout, prompt)?;
    let target = chosen
        .target()
        .expect("choose returns cameras with an address");
    eprintln!("watching \"{}\" at {target}", chosen.instance);
    Ok(target)
}

/// `camcast-view --list`: prints the table on stdout. Returns the exit status: 0 when any
/// camera answered, [`EXIT_NONE_FOUND`] when none did, 1 when mDNS could not start.
pub fn list(timeout: Duration) -> u8 {
    match browse(timeout) {
        Ok(found) if found.is_empty() => {
            eprintln!(
                "camcast-view: {}",
                ChooseError::NoneFound { waited: timeout }
            );
            EXIT_NONE_FOUND
        }
        Ok(found) => {
            print!("{}", table(&found));
            0
        }
        Err(e) => {
            eprintln!("camcast-view: {e}");
            1
        }
    }
}

/// This machine's host name as a DNS label: lowercase letters, digits and hyphens.
fn host_label() -> String {
    label_from(&system_host_name().unwrap_or_default())
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

/// gethostname(2): the unit's ProcSubset=pid hides /proc/sys/kernel/hostname.
pub(crate) fn system_host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; the result is NUL-terminated or cut
    // at the buffer's end, and both are handled below.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok()
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
    use super::*;
    use crate::config::Config;

    fn ad(listen: &str) -> Advertisement {
        let camera = Config::default().camera;
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

    fn found(name: &str, addrs: &[&str], port: u16) -> Found {
        let mut seen = Seen::new();
        add_answer(
            &mut seen,
            &format!("{name}.{SERVICE_TYPE}"),
            "pi-camcast.local.",
            port,
            [("camera".to_string(), format!("cam of {name}"))].into_iter(),
            addrs.iter().map(|a| a.parse().unwrap()),
        );
        seen.into_values().next().unwrap()
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
        assert!(
            Advertisement::new("[::]:1".parse().unwrap(), "x", &Config::default().camera)
                .instance
                .starts_with("camcast on ")
        );
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

    #[test]
    fn answers_for_one_instance_merge_and_escapes_are_undone() {
        let mut seen = Seen::new();
        let full = format!("camcast on pi\\.lab.{SERVICE_TYPE}");
        for addr in ["192.168.1.9", "fd00::9", "192.168.1.9"] {
            add_answer(
                &mut seen,
                &full,
                "pi-camcast.local.",
                1234,
                std::iter::empty(),
                [addr.parse().unwrap()].into_iter(),
            );
        }
        add_answer(
            &mut seen,
            &full,
            "pi-camcast.local.",
            1235,
            std::iter::empty(),
            std::iter::empty(),
        );
        let list: Vec<Found> = seen.into_values().collect();
        assert_eq!(list.len(), 2, "same name, other port: another server");
        assert_eq!(list[0].instance, "camcast on pi.lab");
        assert_eq!(list[0].addresses.len(), 2);
    }

    #[test]
    fn target_prefers_ipv4_and_skips_link_local_ipv6() {
        assert_eq!(
            found("a", &["fd00::2", "127.0.0.1", "192.0.2.2"], 1234)
                .target()
                .unwrap(),
            "192.0.2.2:1234"
        );
        assert_eq!(
            found("a", &["fe80::1", "fd00::2"], 1234).target().unwrap(),
            "[fd00::2]:1234"
        );
        assert_eq!(found("a", &["fe80::1"], 1234).target(), None);
    }

    #[test]
    fn choose_none_explains_what_was_searched_and_how_to_give_an_address() {
        let err = choose(vec![], Duration::from_secs(2), Prompt::Never).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("_camcast._tcp")
                && msg.contains("2.0 s")
                && msg.contains("camcast-view HOST"),
            "{msg}"
        );
        assert_eq!(err.exit_code(), EXIT_NONE_FOUND);
        let err = choose(
            vec![found("a", &["fe80::1"], 1)],
            Duration::from_secs(2),
            Prompt::Never,
        )
        .unwrap_err();
        assert!(matches!(err, ChooseError::NoUsableAddress { .. }), "{err}");
    }

    #[test]
    fn choose_takes_the_only_usable_camera_without_asking() {
        let list = vec![found("a", &["fe80::1"], 1), found("b", &["10.0.0.2"], 2)];
        assert_eq!(
            choose(list, DEFAULT_BROWSE, Prompt::Never)
                .unwrap()
                .instance,
            "b"
        );
    }

    #[test]
    fn choose_among_several_without_a_terminal_lists_them() {
        let list = vec![found("a", &["10.0.0.1"], 1), found("b", &["10.0.0.2"], 2)];
        let err = choose(list, DEFAULT_BROWSE, Prompt::Never).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("10.0.0.1:1") && msg.contains("10.0.0.2:2") && msg.contains("cam of b"),
            "{msg}"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn choose_among_several_asks_until_a_valid_number() {
        let list = || vec![found("a", &["10.0.0.1"], 1), found("b", &["10.0.0.2"], 2)];
        let mut input: &[u8] = b"x\n9\n2\n";
        let mut output = Vec::new();
        let got = choose(
            list(),
            DEFAULT_BROWSE,
            Prompt::Ask {
                input: &mut input,
                output: &mut output,
            },
        )
        .unwrap();
        assert_eq!(got.instance, "b");
        let shown = String::from_utf8(output).unwrap();
        assert_eq!(
            shown.matches("watch which one? [1-2]").count(),
            3,
            "{shown}"
        );
        assert!(
            shown.contains("\"9\" is not a number from 1 to 2"),
            "{shown}"
        );

        let mut eof: &[u8] = b"";
        let err = choose(
            list(),
            DEFAULT_BROWSE,
            Prompt::Ask {
                input: &mut eof,
                output: &mut Vec::new(),
            },
        )
        .unwrap_err();
        assert!(matches!(err, ChooseError::NotChosen(_)), "{err}");
    }

    #[test]
    fn table_aligns_columns_under_a_header() {
        let t = table(&[
            found("camcast on a", &["10.0.0.1"], 1234),
            found("b", &["fe80::1"], 1),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        let col = lines[0].find("CAMERA").unwrap();
        assert_eq!(&lines[1][col..col + 15], "cam of camcast ");
        assert!(
            lines[1].ends_with("10.0.0.1:1234") && lines[2].ends_with("(IPv6 link-local only)"),
            "{t}"
        );
    }
}
