//! Extractors that answer malformed requests with *our* error body instead of axum's text.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body. Requires `Content-Type: application/json` (415 otherwise), at most the router's
/// body limit (413), and a JSON object of the expected shape (400 `invalid_json`). An empty body
/// reads as `{}`.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Read before the body takes the request; the header's text kept only to be quoted.
        let content_type: Option<Result<(), String>> = req.headers().get(CONTENT_TYPE).map(|v| {
            let text = v.to_str().unwrap_or("");
            if is_json(text) {
                Ok(())
            } else {
                Err(text.to_owned())
            }
        });
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(_)
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "request body is larger than this endpoint takes (64 KiB; 8 MiB for POST /v1/heartbeats)",
                    )
                }
                other => ApiError::bad_request("invalid_body", other.body_text()),
            })?;
        let json = match content_type {
            None | Some(Ok(())) if bytes.is_empty() => b"{}".as_slice(),
            Some(Ok(())) => &bytes[..],
            other => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "expected Content-Type: application/json, got {}",
                        other.and_then(Result::err).as_deref().unwrap_or("none")
                    ),
                ))
            }
        };
        // Every body of this API is an object. serde would also read a struct from an array of
        // its fields in order (`[null, null]` as a heartbeat), which no client means.
        if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request(
                "invalid_json",
                "invalid JSON body: it must be a JSON object ({...})",
            ));
        }
        serde_json::from_slice(json)
            .map(Json)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Query parameters; a malformed one is 400 `invalid_query`.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// The path's one parameter as text; one the router cannot read (not UTF-8 once decoded) is
/// 400 with `code` and our error body, not axum's plain text.
pub async fn path_text<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    code: &str,
) -> Result<String, ApiError> {
    let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::bad_request(code, e.body_text()))?;
    Ok(raw)
}

/// The path's one parameter as an id: anything but an integer is 400 `invalid_id`, the
/// message naming `what` it is the id of.
pub async fn path_id<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    what: &str,
) -> Result<i64, ApiError> {
    let raw = path_text(parts, state, "invalid_id").await?;
    raw.parse::<i64>().map_err(|_| {
        ApiError::bad_request(
            "invalid_id",
            format!("{what} id must be an integer, not {raw:?}"),
        )
    })
}

/// A service id in the path; anything but an integer is 400 `invalid_id`.
pub struct ServiceId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for ServiceId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        path_id(parts, state, "service").await.map(ServiceId)
    }
}

/// A token's name in the path; one that is not text is 400 `invalid_token`.
pub struct TokenName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TokenName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        path_text(parts, state, "invalid_token")
            .await
            .map(TokenName)
    }
}
