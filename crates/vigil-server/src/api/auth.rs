//! Admin authentication: `Authorization: Bearer <admin token>`; and reads, which need it too
//! when `auth.anonymous_read` is false.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::error::ApiError;
use crate::app::App;

/// Proof that the request carries the admin token: 401 without one, 403 with a wrong one.
pub struct Admin;

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        check_admin(&parts.headers, app, "this call needs")?;
        Ok(Admin)
    }
}

/// 401 without a bearer token, 403 with a wrong one; `what` begins the 401's message, e.g.
/// "this call needs".
pub(crate) fn check_admin(
    headers: &axum::http::HeaderMap,
    app: &App,
    what: &str,
) -> Result<(), ApiError> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("{what} the admin token: Authorization: Bearer <token>"),
            )
        })?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or("")
        .trim();
    if token_matches(token, &app.admin_token) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the admin token is wrong",
        ))
    }
}

/// Middleware: with `auth.anonymous_read` false, every read (GET, HEAD) but `/healthz` and
/// `/readyz` (which load balancers and supervisors call), `/openapi.json` (the API's
/// description, which holds no data) and the dashboard's pages (which hold none either: their
/// script reads the API with the token the person entered) needs the admin token, the only token there is. Writes check their own token in their handlers.
pub(crate) async fn reads(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse;
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    let probe = matches!(
        request.uri().path(),
        "/healthz" | "/readyz" | "/openapi.json"
    ) || super::ui::holds_no_data(request.uri().path());
    if read && !probe && !app.config.auth.anonymous_read {
        if let Err(err) = check_admin(
            request.headers(),
            &app,
            "reads need (auth.anonymous_read is false)",
        ) {
            return err.into_response();
        }
    }
    next.run(request).await
}

/// Compares in time independent of where the first difference is.
pub fn token_matches(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && !expected.is_empty()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
