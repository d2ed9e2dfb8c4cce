//! The small routes: the page, `/info.json`, `/healthz`, `/snapshot.jpg`, and the errors they
//! share with the stream.

use std::net::SocketAddr;

use axum::extract::rejection::{QueryRejection, RawPathParamsRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Query, RawPathParams, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::cameras::{Camera, UnknownCamera};
use crate::hub::{viewer_name, Api, HubError, NameTooLong, ViewerInfo};
use crate::status::Status;

/// The browser page: no external assets, so it works on a LAN without internet.
const PAGE: &str = include_str!("page.html");

/// Seconds a refused viewer is told to wait before trying again.
const RETRY_AFTER_SECS: u64 = 2;

/// A request that cannot be served, answered as plain text saying why.
#[derive(Debug)]
pub(super) struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        HttpError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<HubError> for HttpError {
    fn from(e: HubError) -> Self {
        // Every hub refusal is temporary: a slot frees up, the camera comes back, or the
        // server restarts.
        HttpError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e.to_string(),
        }
    }
}

impl From<UnknownCamera> for HttpError {
    fn from(e: UnknownCamera) -> Self {
        HttpError {
            status: StatusCode::NOT_FOUND,
            message: e.to_string(),
        }
    }
}

/// The camera a request is for: `/cam/{camera}/...` names it; every other path is the
/// default camera's. An unknown name is a 404 naming the cameras there are.
pub(super) struct SelectedCamera(pub Camera);

impl FromRequestParts<AppState> for SelectedCamera {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, HttpError> {
        let name = match RawPathParams::from_request_parts(parts, app).await {
            Ok(params) => params
                .iter()
                .find(|(key, _)| *key == "camera")
                .map(|(_, value)| value.to_string()),
            Err(RawPathParamsRejection::MissingPathParams(_)) => None,
            // Not UTF-8: no camera has that name.
            Err(e) => return Err(HttpError::bad_request(e.body_text())),
        };
        let camera = match name {
            None => app.cameras.default_camera(),
            // "/cam//x" names no camera (an empty name means the default only in requests).
            Some(name) if name.is_empty() => {
                return Err(UnknownCamera {
                    name,
                    known: app.cameras.names().join(", "),
                }
                .into())
            }
            Some(name) => app.cameras.get(&name)?,
        };
        Ok(SelectedCamera(camera.clone()))
    }
}

impl From<QueryRejection> for HttpError {
    fn from(e: QueryRejection) -> Self {
        HttpError::bad_request(e.body_text())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

/// Query of `/snapshot.jpg` (and, with `fps`, of the stream). Unknown parameters, such as a
/// cache-buster, are ignored.
#[derive(Debug, Deserialize)]
pub(super) struct NameQuery {
    name: Option<String>,
}

/// The viewer's name: `?name=` if given (validated like gRPC names), else the first word of its
/// User-Agent (e.g. `VLC/3.0.18`, `Lavf/59.27.100`), so logs and GetInfo say what is watching.
pub(super) fn viewer_label(
    name: Option<&str>,
    headers: &HeaderMap,
    max_len: usize,
) -> Result<String, HttpError> {
    if let Some(raw) = name {
        return viewer_name(raw, max_len).map_err(|NameTooLong { len, max }| {
            HttpError::bad_request(format!(
                "viewer name is {len} bytes; at most {max} are accepted"
            ))
        });
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split_whitespace().next())
        .unwrap_or("");
    let mut end = agent.len().min(max_len);
    while !agent.is_char_boundary(end) {
        end -= 1;
    }
    Ok(viewer_name(&agent[..end], max_len).expect("truncated to the limit"))
}

/// `Cache-Control: no-store`: every request must reach the camera for a current picture.
pub(super) fn no_store() -> (header::HeaderName, HeaderValue) {
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

/// The page, for the default camera at `/`, for one camera at `/cam/NAME/`.
pub(super) async fn page(_camera: SelectedCamera) -> impl IntoResponse {
    ([no_store()], Html(PAGE))
}

/// `/cam/NAME` → `/cam/NAME/`, where the page's relative URLs resolve under the camera.
pub(super) async fn to_camera_page(SelectedCamera(camera): SelectedCamera) -> Redirect {
    Redirect::permanent(&format!("/cam/{}/", camera.name))
}

pub(super) async fn snapshot(
    State(app): State<AppState>,
    SelectedCamera(camera): SelectedCamera,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<NameQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    let Query(query) = query?;
    let info = ViewerInfo {
        name: viewer_label(query.name.as_deref(), &headers, app.settings.max_name_len)?,
        addr: Some(addr),
        api: Api::Snapshot,
        max_fps: crate::hub::RateCap::NONE,
    };
    let hub = &camera.hub;
    let frame = hub.snapshot(info, app.settings.snapshot_timeout).await?;
    hub.stats().bytes_sent(Api::Snapshot, frame.jpeg.len());
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            no_store(),
        ],
        frame.jpeg,
    )
        .into_response())
}

/// The camera's state and mode, the host's name, and every camera of the server (the page
/// lists them).
pub(super) async fn info(
    State(app): State<AppState>,
    SelectedCamera(camera): SelectedCamera,
) -> impl IntoResponse {
    let (r, each) = app.cameras.reports_for(&camera);
    let mode = r.mode.as_ref();
    let default = &app.cameras.default_camera().name;
    let cameras: Vec<serde_json::Value> = each
        .iter()
        .map(|(c, r)| {
            let mode = r.mode.as_ref();
            json!({
                "name": c.name.as_str(),
                "default": c.name == *default,
                "source": r.source,
                "state": r.status.state.as_str(),
                "serving": serving(&r.status, c.hub.is_closed()),
                "width": mode.map(|m| m.width),
                "height": mode.map(|m| m.height),
                "fps": mode.map(|m| m.fps),
                "viewers": r.viewers.len(),
            })
        })
        .collect();
    let body = json!({
        "name": host_name(),
        "camera": camera.name.as_str(),
        "source": r.source,
        "state": r.status.state.as_str(),
        "detail": r.status.detail,
        "serving": serving(&r.status, camera.hub.is_closed()),
        "width": mode.map(|m| m.width),
        "height": mode.map(|m| m.height),
        "fps": mode.map(|m| m.fps),
        "pixel_format": mode.map(|m| m.pixel_format.clone()),
        "viewers": r.viewers.len(),
        "cameras": cameras,
        "uptime_s": r.uptime.as_secs(),
        // Bugs: anything but 0 deserves a report (the log has each one).
        "panics": crate::panics::count(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    ([no_store()], Json(body))
}

/// The Prometheus exposition (docs/metrics.md). Always 200 with the values of the moment, during
/// shutdown too: those are the final counts (`camcast_shutting_down` says so), and a scraper
/// that still gets through should keep them rather than record a failure.
pub(super) async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            ),
            no_store(),
        ],
        app.metrics.render(),
    )
}

/// The whole appliance: 200 while every camera serves; 503 while one is missing or faulty
/// (the worst state is reported, naming its camera), or once shutdown began. `cameras` has
/// each camera's own answer.
pub(super) async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    let closed = app.cameras.default_camera().hub.is_closed();
    let (code, headers, Json(mut body)) = health(&app.cameras.worst_status(), closed);
    let each: serde_json::Map<String, serde_json::Value> = app
        .cameras
        .iter()
        .map(|c| {
            let (_, _, Json(one)) = health(&c.hub.status(), c.hub.is_closed());
            (c.name.to_string(), one)
        })
        .collect();
    body["cameras"] = each.into();
    (code, headers, Json(body))
}

/// One camera's health, for monitoring each camera on its own: as `/healthz`, for it alone.
pub(super) async fn camera_healthz(SelectedCamera(camera): SelectedCamera) -> impl IntoResponse {
    health(&camera.hub.status(), camera.hub.is_closed())
}

fn serving(status: &Status, closed: bool) -> bool {
    !closed && status.state.is_serving()
}

fn health(
    status: &Status,
    closed: bool,
) -> (
    StatusCode,
    [(header::HeaderName, HeaderValue); 1],
    Json<serde_json::Value>,
) {
    let ok = serving(status, closed);
    let state = if closed {
        "shutting down"
    } else {
        status.state.as_str()
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "state": state,
        "detail": status.detail,
    });
    (code, [no_store()], Json(body))
}

pub(super) async fn not_found() -> HttpError {
    HttpError {
        status: StatusCode::NOT_FOUND,
        message: "not found; this camera serves /, /stream.mjpg, /snapshot.jpg, /info.json, \
                  /metrics and /healthz, and each camera's /cam/NAME/ (the page), \
                  /cam/NAME/stream.mjpg, /cam/NAME/snapshot.jpg, /cam/NAME/info.json and \
                  /cam/NAME/healthz"
            .into(),
    }
}

/// The machine's host name: what the camera is called on the LAN (`<name>.local`). Read on
/// each request, since the appliance may be renamed at boot.
fn host_name() -> String {
    crate::host::name()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "camcast".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::State;

    fn status(state: State, detail: &str) -> Status {
        Status {
            state,
            detail: detail.into(),
        }
    }

    #[test]
    fn health_is_503_while_the_camera_is_missing_faulty_or_shutting_down() {
        let ok = health(&status(State::Streaming, ""), false);
        assert_eq!(ok.0, StatusCode::OK);
        assert_eq!(ok.2["status"], "ok");
        let waiting = health(&status(State::WaitingForCamera, "no /dev/video0"), false);
        assert_eq!(waiting.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(waiting.2["state"], "waiting for camera");
        assert_eq!(waiting.2["detail"], "no /dev/video0");
        assert_eq!(
            health(&status(State::Fault, "EIO"), false).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let closing = health(&status(State::Ready, ""), true);
        assert_eq!(closing.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(closing.2["state"], "shutting down");
    }

    #[test]
    fn viewer_label_prefers_the_name_then_the_user_agent() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static("VLC/3.0.18 LibVLC/3.0.18"),
        );
        assert_eq!(viewer_label(Some("hall"), &headers, 64).unwrap(), "hall");
        assert_eq!(viewer_label(None, &headers, 64).unwrap(), "VLC/3.0.18");
        assert_eq!(viewer_label(None, &headers, 3).unwrap(), "VLC");
        assert_eq!(
            viewer_label(None, &HeaderMap::new(), 64).unwrap(),
            "(unnamed)"
        );
        let err = viewer_label(Some(&"x".repeat(65)), &headers, 64).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("at most 64"), "{}", err.message);
    }
}
