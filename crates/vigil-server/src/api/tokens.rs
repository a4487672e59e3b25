//! `/v1/tokens`: make, list and revoke tokens (admin). Thin: parse, call [`App`], answer.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use vigil_proto::{Role as WireRole, Token, TokenCreated, TokenList, TokenRequest};

use super::auth::Admin;
use super::error::ApiError;
use super::extract::{Json, TokenName};
use crate::app::{expired, App, NewToken};
use crate::model::{Role, TokenRecord};

fn role(role: WireRole) -> Role {
    match role {
        WireRole::Admin => Role::Admin,
        WireRole::Agent => Role::Agent,
        WireRole::Reader => Role::Reader,
    }
}

fn wire_role(role: Role) -> WireRole {
    match role {
        Role::Admin => WireRole::Admin,
        Role::Agent => WireRole::Agent,
        Role::Reader => WireRole::Reader,
    }
}

fn token_json(record: TokenRecord, now: chrono::DateTime<chrono::Utc>) -> Token {
    Token {
        expired: expired(&record, now),
        name: record.name,
        role: wire_role(record.role),
        hosts: record.hosts,
        created_at: record.created_at,
        created_by: record.created_by,
        expires_at: record.expires_at,
    }
}

const UNAUTHORIZED: &str = "`unauthorized`: no token, or one that is not valid";
const FORBIDDEN: &str = "`forbidden`: a token whose role is not admin";

#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    operation_id = "create_token",
    security(("token" = [])),
    request_body(content = TokenRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The token and its secret, shown this once (the server keeps its SHA-256 only)", body = TokenCreated),
        (status = 400, description = "`invalid_token` (a bad name, a host pattern on a token that is not an agent's, a bad pattern), `invalid_expires_in`, `invalid_json`, `invalid_body`", body = vigil_proto::ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = vigil_proto::ErrorBody),
        (status = 403, description = FORBIDDEN, body = vigil_proto::ErrorBody),
        (status = 409, description = "`token_exists`: a token of this name exists", body = vigil_proto::ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 64 KiB", body = vigil_proto::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = vigil_proto::ErrorBody),
        (status = 429, description = "`rate_limited`: this caller (its token, or its address) wrote faster than `limits.writes_per_second` after its `limits.write_burst`; nothing was changed; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
        (status = 503, description = "`database_unavailable`: nothing was made; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn create(
    State(app): State<Arc<App>>,
    Admin(caller): Admin,
    Json(body): Json<TokenRequest>,
) -> Result<(StatusCode, axum::Json<TokenCreated>), ApiError> {
    let new = NewToken {
        name: body.name,
        role: role(body.role),
        hosts: body.hosts,
        expires_in_s: body.expires_in_s,
    };
    let (record, secret) = app.create_token(new, &caller).await?;
    let now = app.clock.now();
    Ok((
        StatusCode::CREATED,
        axum::Json(TokenCreated {
            token: token_json(record, now),
            secret,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    operation_id = "list_tokens",
    security(("token" = [])),
    responses(
        (status = 200, description = "Every token made with `POST /v1/tokens` and not revoked, by name; never a secret. The server's own `admin` and `agent` tokens (files of its data directory) are not listed.", body = TokenList),
        (status = 401, description = UNAUTHORIZED, body = vigil_proto::ErrorBody),
        (status = 403, description = FORBIDDEN, body = vigil_proto::ErrorBody),
        (status = 503, description = "`database_unavailable`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn list(
    State(app): State<Arc<App>>,
    _admin: Admin,
) -> Result<axum::Json<TokenList>, ApiError> {
    let now = app.clock.now();
    let tokens = app
        .list_tokens()
        .await?
        .into_iter()
        .map(|t| token_json(t, now))
        .collect();
    Ok(axum::Json(TokenList { tokens }))
}

#[utoipa::path(
    delete,
    path = "/v1/tokens/{name}",
    tag = "tokens",
    operation_id = "revoke_token",
    security(("token" = [])),
    params(
        ("name" = String, Path, description = "the token's name", example = "stor-fleet"),
    ),
    responses(
        (status = 204, description = "Revoked: refused by this server at once, by every replica within `flush_interval`"),
        (status = 400, description = "`invalid_token`: a name that is not text once decoded", body = vigil_proto::ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = vigil_proto::ErrorBody),
        (status = 403, description = FORBIDDEN, body = vigil_proto::ErrorBody),
        (status = 404, description = "`token_not_found`: no token has this name", body = vigil_proto::ErrorBody),
        (status = 429, description = "`rate_limited`: this caller (its token, or its address) wrote faster than `limits.writes_per_second` after its `limits.write_burst`; nothing was changed; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
        (status = 503, description = "`database_unavailable`: nothing was revoked; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn revoke(
    State(app): State<Arc<App>>,
    Admin(caller): Admin,
    TokenName(name): TokenName,
) -> Result<StatusCode, ApiError> {
    app.revoke_token(&name, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}
