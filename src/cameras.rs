//! The server's cameras by name: one hub each (its own capture, on demand, and its own
//! state), all taking viewer seats from one [`Seats`]. The first camera is the default one:
//! the tutorial API, today's HTTP paths and an empty camera name serve it.
//!
//! The appliance's one state (LED, systemd, gRPC health) is the worst of the cameras'
//! ([`worst`]): a camera in fault shows even while another streams.

use std::sync::Arc;

use futures_util::future::select_all;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::CameraName;
use crate::hub::{Hub, HubReport};
use crate::status::{State, Status, StatusCell};

/// One camera: its name, its hub, and the state its hub publishes.
#[derive(Clone)]
pub struct Camera {
    pub name: CameraName,
    pub hub: Hub,
    pub status: StatusCell,
}

/// Every camera of one server, in the config's order; cheap to clone.
#[derive(Clone)]
pub struct Cameras {
    list: Arc<[Camera]>,
}

/// A camera name no camera has: the answer names the ones there are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no camera named {name:?}; this server has: {known}")]
pub struct UnknownCamera {
    pub name: String,
    /// The existing names, comma-separated, the default first.
    pub known: String,
}

impl Cameras {
    /// The cameras in order; the first is the default. Panics if there is none (the config
    /// always has one).
    pub fn new(list: Vec<Camera>) -> Cameras {
        assert!(!list.is_empty(), "a server has at least one camera");
        Cameras { list: list.into() }
    }

    /// One camera named "default" (a server with one hub; tests).
    pub fn single(hub: Hub, status: StatusCell) -> Cameras {
        Cameras::new(vec![Camera {
            name: CameraName::default_name(),
            hub,
            status,
        }])
    }

    /// The default camera.
    pub fn default_camera(&self) -> &Camera {
        &self.list[0]
    }

    /// The camera called `name`; the empty name is the default camera. `name` comes from the
    /// network: it is only compared, and quoted (escaped) in the error.
    pub fn get(&self, name: &str) -> Result<&Camera, UnknownCamera> {
        if name.is_empty() {
            return Ok(self.default_camera());
        }
        self.list
            .iter()
            .find(|c| c.name.as_str() == name)
            .ok_or_else(|| UnknownCamera {
                name: name.chars().take(64).collect(),
                known: self.names().join(", "),
            })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Camera> {
        self.list.iter()
    }

    pub fn names(&self) -> Vec<&str> {
        self.list.iter().map(|c| c.name.as_str()).collect()
    }

    /// A report of every camera, each taken once, in order, and the `asked` camera's own (its
    /// entry's copy): an answer that shows both its details and the camera list agrees with
    /// itself.
    pub fn reports_for(&self, asked: &Camera) -> (HubReport, Vec<(&Camera, HubReport)>) {
        let each: Vec<_> = self.list.iter().map(|c| (c, c.hub.report())).collect();
        let own = each
            .iter()
            .find(|(c, _)| c.name == asked.name)
            .map_or_else(|| asked.hub.report(), |(_, r)| r.clone());
        (own, each)
    }

    /// Viewers on every camera now.
    pub fn viewer_count(&self) -> usize {
        self.list.iter().map(|c| c.hub.viewer_count()).sum()
    }

    /// Ends every camera's viewer streams and stops every capture, all at once.
    pub async fn shutdown(&self) {
        futures_util::future::join_all(self.list.iter().map(|c| c.hub.shutdown())).await;
    }

    /// The worst of the cameras' states now (see [`worst`]).
    pub fn worst_status(&self) -> Status {
        let each: Vec<(&str, Status)> = self
            .list
            .iter()
            .map(|c| (c.name.as_str(), c.status.get()))
            .collect();
        worst(&each)
    }

    /// The appliance's one state, following the cameras' until `stop`. With one camera it is
    /// that camera's own cell; with several, a task publishes [`Cameras::worst_status`] into
    /// a cell of its own at every change.
    pub fn overall_status(&self, stop: CancellationToken) -> (StatusCell, Option<JoinHandle<()>>) {
        if self.list.len() == 1 {
            return (self.default_camera().status.clone(), None);
        }
        let overall = StatusCell::new();
        let task = tokio::spawn({
            let (cameras, overall) = (self.clone(), overall.clone());
            async move {
                let mut rxs: Vec<_> = cameras.iter().map(|c| c.status.subscribe()).collect();
                loop {
                    let Status { state, detail } = cameras.worst_status();
                    overall.set(state, detail);
                    let changed = select_all(rxs.iter_mut().map(|rx| Box::pin(rx.changed())));
                    tokio::select! {
                        () = stop.cancelled() => break,
                        (result, _, _) = changed => if result.is_err() { break },
                    }
                }
            }
        });
        (overall, Some(task))
    }
}

/// How bad a state is for the appliance as a whole: a fault, then a missing camera, then
/// one still starting; streaming ranks above ready so the LED shows that someone watches.
fn badness(state: State) -> u8 {
    match state {
        State::Ready => 0,
        State::Streaming => 1,
        State::Starting => 2,
        State::WaitingForCamera => 3,
        State::Fault => 4,
    }
}

/// The worst of several cameras' states, its detail naming the camera (with one camera, its
/// detail as it is). Ties go to the first camera in the list.
pub fn worst(each: &[(&str, Status)]) -> Status {
    let mut worst: Option<&(&str, Status)> = None;
    for entry in each {
        if worst.is_none_or(|w| badness(entry.1.state) > badness(w.1.state)) {
            worst = Some(entry);
        }
    }
    match worst {
        None => Status {
            state: State::Starting,
            detail: String::new(),
        },
        Some((_, status)) if each.len() == 1 => status.clone(),
        Some((name, status)) => Status {
            state: status.state,
            detail: format!("camera {name}: {}", status.detail),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: State, detail: &str) -> Status {
        Status {
            state,
            detail: detail.into(),
        }
    }

    #[test]
    fn the_worst_state_wins_and_names_its_camera() {
        let each = [
            ("door", status(State::Streaming, "2 viewers")),
            (
                "yard",
                status(State::WaitingForCamera, "/dev/video2 absent"),
            ),
            ("shed", status(State::Ready, "idle")),
        ];
        assert_eq!(
            worst(&each),
            status(State::WaitingForCamera, "camera yard: /dev/video2 absent")
        );
        let fault = [each[0].clone(), ("shed", status(State::Fault, "EIO"))];
        assert_eq!(worst(&fault).state, State::Fault);
        let calm = [each[0].clone(), each[2].clone()];
        assert_eq!(worst(&calm).state, State::Streaming, "someone watches");
        assert_eq!(worst(&each[..1]), each[0].1, "one camera: its own words");
    }
}
