//! Who may call: `X-Auth-Token`, as keystonemiddleware would have checked it.
//!
//! There is no Keystone here, so Vigil's own tokens stand in for Keystone's: a reader (or
//! admin) token may list, an admin token may change. A token is accepted whole or as the part
//! after the first `:`, because cinderclient's `noauth` plugin sends
//! `X-Auth-Token: <user_id>:<project_id>`; then `--os-project-id <token>` is how an operator
//! passes it. Reads need no token while `auth.anonymous_read` is true (the default, so
//! `openstack --os-auth-type none` lists). `cinder_api.noauth` lets everything through.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::fault::Fault;
use crate::app::{App, AppError};
use crate::auth::{Caller, Need};

/// Reads are anonymous, or the request carries a reader or admin token.
pub struct Reader;

/// The request carries an admin token: needed to change anything.
pub struct Admin(pub Caller);

fn token(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The caller, with its token whole or after the first `:`.
fn address(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

fn caller(parts: &Parts, app: &App) -> Result<Caller, Fault> {
    let address = address(parts);
    let now = app.clock.now();
    let token = token(parts);
    let grant = match app.tokens.identify(token, now) {
        Ok(grant) => grant,
        Err(denied) => match token.and_then(|t| t.split_once(':')) {
            Some((_, project)) => app
                .tokens
                .identify(Some(project), now)
                .map_err(|_| Fault::from(AppError::Denied(denied)))?,
            None => return Err(AppError::Denied(denied).into()),
        },
    };
    Ok(Caller { grant, address })
}

fn check(parts: &Parts, app: &App, need: Need<'_>) -> Result<Caller, Fault> {
    // cinderclient sends some `X-Auth-Token` on every call (`<user>:<project>` with its
    // noauth plugin), so where a read needs no token, the one it sends is not looked at.
    if app.config.cinder_api.noauth
        || (matches!(need, Need::Read) && app.config.auth.anonymous_read)
    {
        // No token looked at, but the address is still the caller's: for the history and
        // the write limits.
        return Ok(Caller {
            grant: None,
            address: address(parts),
        });
    }
    let caller = caller(parts, app)?;
    app.tokens
        .authorize(&caller, need)
        .map_err(|denied| match (&denied, need) {
            // Cinder's own words for a role that may not change services.
            (crate::auth::Denied::Forbidden(_), Need::Admin) => Fault::new(
                StatusCode::FORBIDDEN,
                "Policy doesn't allow volume_extension:services:update to be performed.",
            ),
            _ => AppError::Denied(denied).into(),
        })?;
    Ok(caller)
}

impl FromRequestParts<Arc<App>> for Reader {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Fault> {
        check(parts, app, Need::Read).map(|_| Reader)
    }
}

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Fault> {
        check(parts, app, Need::Admin).map(Admin)
    }
}
