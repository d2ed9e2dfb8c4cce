//! The viewer's side of discovery: listening for camcast servers on the LAN and collecting
//! their answers, one entry per camera. Choosing among them is the viewer's
//! (`crate::view::choose`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent};

use super::SERVICE_TYPE;

/// How long `camcast-view` listens for answers by default.
pub const DEFAULT_BROWSE: Duration = Duration::from_secs(2);

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A camera as the browser would have found it, for the viewer's tests too.
    pub(crate) fn found(name: &str, addrs: &[&str], port: u16) -> Found {
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
}
