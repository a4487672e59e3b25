//! `GET /metrics` (on the main listener, and on `metrics.listen` when set) and the middleware
//! that counts and times every request by route template, in a `request` span.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{MatchedPath, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::app::App;

/// Content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether `accept` asks for OpenMetrics.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// `GET /metrics`. Without a token unless `metrics.require_token`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "metrics",
    security((), ("token" = [])),
    responses(
        (status = 200, description = "The server's and the fleet's metrics for Prometheus: the text format, or OpenMetrics when `Accept` asks for `application/openmetrics-text`", content(
            (String = "text/plain", example = "vigil_services{state=\"up\",status=\"enabled\",zone=\"nova\",source=\"vigil\"} 12\n"),
            (String = "application/openmetrics-text"),
        )),
        (status = 401, description = "`unauthorized`: `metrics.require_token` is on and no reader or admin token was given, or the token is not valid", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: an agent token", body = vigil_proto::ErrorBody),
    )
)]
pub(crate) async fn handler(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // On the main listener the read middleware checked `Need::Read` already; on the metrics
    // listener of its own it did not, and `anonymous_read = false` holds there too.
    let need = if app.config.metrics.require_token {
        crate::auth::Need::TokenRead
    } else {
        crate::auth::Need::Read
    };
    super::auth::require(&headers, None, &app, need)?;
    let openmetrics = wants_openmetrics(&headers);
    // Copying 100,000 services takes milliseconds: off the async workers.
    let encoded = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || {
            app.metrics.encode(
                &app.registry,
                app.clock.now(),
                app.is_leader(),
                app.database.errors.load(Ordering::Relaxed),
                openmetrics,
            )
        })
        .await
    };
    match encoded {
        Ok(Ok(text)) => {
            let content_type = if openmetrics {
                OPENMETRICS
            } else {
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            };
            Ok((
                [(CONTENT_TYPE, HeaderValue::from_static(content_type))],
                text,
            )
                .into_response())
        }
        _ => {
            tracing::error!("cannot encode the metrics");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log",
            ))
        }
    }
}

/// The router of the metrics' own listener (`metrics.listen`): `/metrics` only.
pub(crate) fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(handler))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint: this listener serves /metrics only",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(app.clone(), track))
        .with_state(app)
}

/// Middleware of every router: counts and times each request by route template. With
/// request logging on (`debug` for this module's target, e.g.
/// `VIGIL_LOG=info,vigil_server::api::metrics=debug`), it also runs each request in a
/// `request` span (request id, method, route, and the service id when the path has one), so
/// that what the request logs can be told apart, and logs its answer; the request id is the
/// client's `X-Request-Id` when it sends one (sent back in any case), else generated and sent
/// back. Off (the default), a request costs two metric updates: the span, the id and the path
/// parsing cost a few microseconds per request, as much as a heartbeat's own work.
pub(crate) async fn track(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    tracked(&app, request, |request| next.run(request)).await
}

/// [`track`] around `inner`, for a middleware that does more than track (the API's own, which
/// checks each request too: one layer rather than several, each of which costs a boxed clone
/// of the rest of the router per request).
pub(crate) async fn tracked<F: std::future::Future<Output = Response>>(
    app: &App,
    mut request: axum::extract::Request,
    inner: impl FnOnce(axum::extract::Request) -> F,
) -> Response {
    use axum::RequestExt;
    use tracing::Instrument;
    let tracking = Tracking::start(app, &request);
    if !logging_requests() {
        let response = inner(request).await;
        return tracking.finish(app, response);
    }
    let service_id = request
        .extract_parts::<axum::extract::RawPathParams>()
        .await
        .ok()
        .and_then(|params| {
            params
                .iter()
                .find(|(name, _)| *name == "id")
                .map(|(_, v)| v.to_string())
        });
    let request_id = tracking.sent_id.clone().unwrap_or_else(new_request_id);
    let span = tracing::debug_span!(
        "request",
        request_id = %request_id,
        method = %tracking.method,
        route = tracking.route,
        service_id = service_id.as_deref(),
    );
    let response = inner(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            took_ms = tracking.started.elapsed().as_secs_f64() * 1e3,
            "request answered"
        );
    });
    Tracking {
        sent_id: Some(request_id),
        ..tracking
    }
    .finish(app, response)
}

/// Whether requests are logged: `debug` on for this module's target, whichever module asks
/// (the API's layer lives in `api::layer`, and the documented filter names this one).
pub(crate) fn logging_requests() -> bool {
    tracing::enabled!(target: "vigil_server::api::metrics", tracing::Level::DEBUG)
}

/// What [`tracked`] notes of a request before it runs, to count it when answered.
pub(crate) struct Tracking {
    started: std::time::Instant,
    route: &'static str,
    method: &'static str,
    /// The request id to send back: the client's, when it sent a usable one.
    sent_id: Option<String>,
}

impl Tracking {
    pub(crate) fn start(app: &App, request: &axum::extract::Request) -> Tracking {
        let started = std::time::Instant::now();
        let route = crate::metrics::route_label(
            request
                .extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str),
        );
        app.metrics.protocol(request.version());
        Tracking {
            started,
            route,
            method: crate::metrics::method_label(request.method()),
            sent_id: request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| {
                    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
                })
                .map(str::to_string),
        }
    }

    /// Counts and times the answer, and sends the request id back.
    pub(crate) fn finish(self, app: &App, mut response: Response) -> Response {
        app.metrics.request(
            self.route,
            self.method,
            response.status().as_u16(),
            self.started.elapsed(),
        );
        if let Some(value) = self.sent_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
            response.headers_mut().insert("x-request-id", value);
        }
        response
    }
}

/// A fresh request id: 16 hex digits.
fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_is_chosen_by_accept() {
        let mut headers = HeaderMap::new();
        assert!(!wants_openmetrics(&headers));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static(
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4",
            ),
        );
        assert!(wants_openmetrics(&headers));
    }
}
