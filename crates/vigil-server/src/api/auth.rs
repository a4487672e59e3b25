//! Who is calling, read from the request: `Authorization: Bearer <token>` and the client's
//! address, as a [`Caller`]; the decisions are [`crate::auth`]'s.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use super::error::ApiError;
use crate::app::App;
pub(crate) use crate::auth::Caller;
use crate::auth::Need;

/// The bearer token of a request, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let header = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The caller of a request: its token's grant (401 for a token that is not valid) and its
/// address.
pub(crate) fn caller(
    headers: &HeaderMap,
    address: Option<SocketAddr>,
    app: &App,
) -> Result<Caller, ApiError> {
    let grant = app.tokens.identify(bearer(headers), app.clock.now())?;
    Ok(Caller {
        grant,
        address: address.map(|a| a.ip().to_string()),
    })
}

/// The caller of a request that needs `need`: 401 without a valid token where one is needed,
/// 403 with a token whose role (or hosts) may not.
pub(crate) fn require(
    headers: &HeaderMap,
    address: Option<SocketAddr>,
    app: &App,
    need: Need<'_>,
) -> Result<Caller, ApiError> {
    let caller = caller(headers, address, app)?;
    app.tokens.authorize(&caller, need)?;
    Ok(caller)
}

fn address(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        caller(&parts.headers, address(parts), app)
    }
}

/// A caller with the admin role: 401 without a token, 403 with one of another role.
pub struct Admin(pub Caller);

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        require(&parts.headers, address(parts), app, Need::Admin).map(Admin)
    }
}

/// Every read (GET, HEAD) but `/healthz` and `/readyz` (which load balancers and supervisors
/// call), `/openapi.json` (the API's description, which holds no data) and the dashboard's
/// pages (which hold none either: their script reads the API with the token the person
/// entered) is checked here, by the API's middleware: free while `auth.anonymous_read` holds
/// (but a token that is sent must be valid), else for a reader or admin token. Writes check
/// their own needs in their handlers.
pub(crate) fn check_read(app: &App, request: &axum::extract::Request) -> Result<(), ApiError> {
    use axum::http::Method;
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    if !read {
        return Ok(());
    }
    let probe = matches!(
        request.uri().path(),
        "/healthz" | "/readyz" | "/openapi.json"
    ) || super::ui::holds_no_data(request.uri().path());
    if probe {
        return Ok(());
    }
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    require(request.headers(), address, app, Need::Read).map(|_| ())
}
