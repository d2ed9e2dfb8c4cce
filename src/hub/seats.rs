//! Viewer seats: the viewer cap and the per-host cap, counted across every camera.
//!
//! Each camera has its own hub, but the caps protect one machine's uplink and CPU, so all of
//! a server's hubs take their viewers' seats from one [`Seats`]: 64 viewers in all, however
//! they spread over the cameras, and 8 per host in all, not 8 per camera.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{HubConfig, HubError, ViewerRefusal};
use crate::admission::PeerGroup;

/// The seats one server has; clones share them.
#[derive(Clone)]
pub struct Seats {
    taken: Arc<Mutex<Taken>>,
    max_viewers: usize,
    max_per_address: usize,
}

#[derive(Default)]
struct Taken {
    total: usize,
    per_group: HashMap<PeerGroup, usize>,
}

/// One viewer's seat, given back when dropped.
pub struct Seat {
    seats: Seats,
    group: Option<PeerGroup>,
}

impl Seats {
    /// Seats for the caps in `cfg` (`max_viewers`, `max_viewers_per_address`).
    pub fn new(cfg: &HubConfig) -> Seats {
        Seats {
            taken: Arc::default(),
            max_viewers: cfg.max_viewers,
            max_per_address: cfg.max_viewers_per_address,
        }
    }

    /// A seat for a viewer from `group` (`None`: no address known, only the total counts), or
    /// why there is none.
    pub fn take(&self, group: Option<PeerGroup>) -> Result<Seat, (ViewerRefusal, HubError)> {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        if taken.total >= self.max_viewers {
            let e = HubError::Full {
                max: self.max_viewers,
            };
            return Err((ViewerRefusal::ViewerCap, e));
        }
        if let Some(peer) = group {
            let max = self.max_per_address;
            if taken.per_group.get(&peer).copied().unwrap_or(0) >= max {
                return Err((
                    ViewerRefusal::PerAddressCap,
                    HubError::AddressFull { max, peer },
                ));
            }
            *taken.per_group.entry(peer).or_default() += 1;
        }
        taken.total += 1;
        Ok(Seat {
            seats: self.clone(),
            group,
        })
    }

    /// Seats taken now, across every camera.
    pub fn taken(&self) -> usize {
        self.taken.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut taken = self.seats.taken.lock().unwrap_or_else(|p| p.into_inner());
        taken.total -= 1;
        if let Some(group) = self.group {
            if let Some(n) = taken.per_group.get_mut(&group) {
                *n -= 1;
                if *n == 0 {
                    taken.per_group.remove(&group);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seats(max_viewers: usize, max_viewers_per_address: usize) -> Seats {
        Seats::new(&HubConfig {
            max_viewers,
            max_viewers_per_address,
            ..HubConfig::default()
        })
    }

    #[test]
    fn the_caps_count_every_holder_and_seats_come_back() {
        let s = seats(3, 2);
        let a = PeerGroup::Host("10.0.0.1".parse().unwrap());
        let b = PeerGroup::Host("10.0.0.2".parse().unwrap());
        let a1 = s.take(Some(a)).unwrap();
        let _a2 = s.take(Some(a)).unwrap();
        let (why, e) = s.take(Some(a)).err().unwrap();
        assert_eq!(why, ViewerRefusal::PerAddressCap);
        assert_eq!(e, HubError::AddressFull { max: 2, peer: a });
        let _b1 = s.take(Some(b)).unwrap();
        let (why, e) = s.take(None).err().unwrap();
        assert_eq!(
            (why, e),
            (ViewerRefusal::ViewerCap, HubError::Full { max: 3 })
        );
        assert_eq!(s.taken(), 3);
        drop(a1);
        assert_eq!(s.taken(), 2);
        let _a3 = s.clone().take(Some(a)).expect("a's seat came back");
    }
}
