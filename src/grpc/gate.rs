//! The gate every gRPC request passes before reaching a service: the bearer-token check (when
//! tokens are configured) and the open-request count the idle timeout relies on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::Status;

use crate::admission::{conn_info, Tracked};
use crate::auth::Tokens;

/// Paths reachable without a token: health says only "serving or not", and monitoring
/// (grpc_health_probe, load balancers) should not need a viewer's secret.
const OPEN_PREFIXES: &[&str] = &["/grpc.health.v1.Health/"];

#[derive(Clone, Default)]
pub struct GateLayer {
    tokens: Option<Arc<Tokens>>,
}

impl GateLayer {
    pub fn new(tokens: Option<Tokens>) -> Self {
        GateLayer {
            tokens: tokens.map(Arc::new),
        }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    tokens: Option<Arc<Tokens>>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Err(status) = self.check(&req) {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let guard = conn_info(&req).map(|c| c.begin_request());
        // Standard tower idiom: the clone that was made ready is the one called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let resp = inner.call(req).await?;
            Ok(match guard {
                Some(g) => resp.map(|body| Body::new(Tracked::new(body, g))),
                None => resp,
            })
        })
    }
}

impl<S> Gate<S> {
    fn check<B>(&self, req: &http::Request<B>) -> Result<(), Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(());
        };
        let path = req.uri().path();
        if OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Ok(());
        }
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        tokens.check_header(header).map_err(|e| {
            if let Some(conn) = conn_info(req) {
                conn.count_refusal(crate::admission::Refusal::Token);
            }
            let addr = conn_info(req).map(|c| c.remote.to_string());
            tracing::warn!(addr = addr.as_deref().unwrap_or("?"), path, reason = %e,
                "request refused: bad or missing token");
            Status::unauthenticated(e.to_string())
        })
    }
}
