//! The JSON body of an action, refused in Cinder's words rather than axum's.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::fault::Fault;

/// A JSON body; an empty one reads as `{}`. The content type is not checked: Cinder parses
/// whatever it is given as JSON, and so do we.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Fault;

    async fn from_request(req: Request, state: &S) -> Result<Self, Fault> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Fault::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Request body is larger than 64 KiB.",
                )
            } else {
                Fault::bad_request(rejection.body_text())
            }
        })?;
        let json = if bytes.iter().all(u8::is_ascii_whitespace) {
            &b"{}"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(json)
            .map(Body)
            .map_err(|e| Fault::bad_request(format!("Malformed request body: {e}")))
    }
}
