//! Viewer tokens on HTTP: `Authorization: Bearer TOKEN` (scripts, Home Assistant) or
//! `?token=TOKEN` (a browser bookmark, VLC, an `<img>` tag, which cannot send headers).
//! Refusals are 401 with `WWW-Authenticate: Bearer`, logged with the peer and the path but
//! never the token or the query string that carried it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{AuthError, Tokens};

pub(super) async fn require_token(
    State(tokens): State<Option<Arc<Tokens>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(tokens) = tokens else {
        return next.run(req).await;
    };
    match check(&tokens, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0);
            tracing::warn!(addr = ?peer, path = req.uri().path(), reason = %e,
                "HTTP request refused: bad or missing token");
            if let Some(conn) = crate::admission::conn_info(&req) {
                conn.count_refusal(crate::admission::Refusal::Token);
            }
            refuse(&e)
        }
    }
}

/// The header wins when both are given; a query token is the fallback for clients that cannot
/// set headers.
fn check(tokens: &Tokens, req: &Request) -> Result<(), AuthError> {
    if let Some(h) = req.headers().get(header::AUTHORIZATION) {
        return tokens.check_header(Some(h.as_bytes()));
    }
    match query_token(req.uri().query().unwrap_or("")) {
        Some(t) => tokens.check_token(&t),
        None => Err(AuthError::Missing),
    }
}

fn query_token(query: &str) -> Option<String> {
    url_pairs(query).find_map(|(k, v)| (k == "token").then_some(v))
}

fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
}

fn refuse(e: &AuthError) -> Response {
    let body = format!("{e}; on HTTP, send `Authorization: Bearer TOKEN` or add ?token=TOKEN\n");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"camcast\"")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::query_token;

    #[test]
    fn token_is_found_among_other_parameters() {
        assert_eq!(
            query_token("name=tv&token=abc%2Bdef&fps=5").as_deref(),
            Some("abc+def")
        );
        assert_eq!(query_token("name=tv"), None);
        assert_eq!(query_token(""), None);
        assert_eq!(query_token("%%%"), None);
    }
}
