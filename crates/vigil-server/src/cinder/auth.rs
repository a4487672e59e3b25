//! Who may call: `X-Auth-Token`, as keystonemiddleware would have checked it.
//!
//! There is no Keystone here, so the admin token of the Vigil API stands in for an admin
//! role. It is accepted whole or as the part after the first `:`, because cinderclient's
//! `noauth` plugin sends `X-Auth-Token: <user_id>:<project_id>`; then
//! `--os-project-id <admin token>` is how an operator passes it. Reads need no token while
//! `auth.anonymous_read` is true (the default, so `openstack --os-auth-type none` lists);
//! with it false they need some token, as they need some valid token in a real cloud.
//! `cinder_api.noauth` lets everything through.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::fault::Fault;
use crate::api::token_matches;
use crate::app::App;

/// Reads are anonymous, or the request carries a token (any): enough to list.
pub struct Reader;

/// The request carries the admin token: needed to change anything.
pub struct Admin;

fn token(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn unauthorized() -> Fault {
    Fault::new(
        StatusCode::UNAUTHORIZED,
        "The request you have made requires authentication: send X-Auth-Token.",
    )
}

impl FromRequestParts<Arc<App>> for Reader {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Fault> {
        if app.config.cinder_api.noauth || app.config.auth.anonymous_read || token(parts).is_some()
        {
            Ok(Reader)
        } else {
            Err(unauthorized())
        }
    }
}

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Fault> {
        if app.config.cinder_api.noauth {
            return Ok(Admin);
        }
        let token = token(parts).ok_or_else(unauthorized)?;
        let project = token.split_once(':').map(|(_, project)| project);
        if token_matches(token, &app.admin_token)
            || project.is_some_and(|p| token_matches(p, &app.admin_token))
        {
            Ok(Admin)
        } else {
            Err(Fault::new(
                StatusCode::FORBIDDEN,
                "Policy doesn't allow volume_extension:services:update to be performed.",
            ))
        }
    }
}
