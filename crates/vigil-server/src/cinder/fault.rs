//! Errors in Cinder's shape: `{"<faultName>": {"code": N, "message": "..."}}`, the fault name
//! chosen from the status exactly as Cinder's `wsgi.Fault` does, so clients that key on it
//! (cinderclient's exception mapping reads the first key) see what a real Cinder sends.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::app::AppError;

/// An HTTP status and a message for people.
#[derive(Debug)]
pub struct Fault {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for `Retry-After` on a 429 (a 503 always says `RETRY_AFTER_S`).
    pub retry_after: Option<u64>,
}

impl Fault {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Fault {
        Fault {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::BAD_REQUEST, message)
    }

    /// Cinder's `InvalidInput`, the 400 of most rejected bodies.
    pub fn invalid_input(reason: impl std::fmt::Display) -> Fault {
        Fault::bad_request(format!("Invalid input received: {reason}"))
    }

    /// Cinder's `ServiceNotFound` with a host.
    pub fn service_not_found(host: &str, binary: &str) -> Fault {
        Fault::new(
            StatusCode::NOT_FOUND,
            format!("Service {binary} could not be found on host {host}."),
        )
    }

    /// The key Cinder puts the error under for this status.
    fn name(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            405 => "badMethod",
            409 => "conflictingRequest",
            413 | 429 => "overLimit",
            415 => "badMediaType",
            501 => "notImplemented",
            503 => "serviceUnavailable",
            _ => "computeFault",
        }
    }
}

impl From<AppError> for Fault {
    fn from(err: AppError) -> Self {
        match err {
            AppError::Invalid { message, .. } => Fault::invalid_input(message),
            AppError::NotFound(_) => Fault::new(StatusCode::NOT_FOUND, err.to_string()),
            AppError::TokenNotFound(_) | AppError::MaintenanceNotFound(_) => {
                Fault::new(StatusCode::NOT_FOUND, err.to_string())
            }
            AppError::RateLimited { retry_after_s, .. } => Fault {
                retry_after: Some(retry_after_s),
                ..Fault::new(StatusCode::TOO_MANY_REQUESTS, err.to_string())
            },
            AppError::TooManyServices(_) => Fault::new(StatusCode::CONFLICT, err.to_string()),
            AppError::ServiceUp { .. }
            | AppError::ReadOnlySource { .. }
            | AppError::TokenExists(_) => Fault::new(StatusCode::CONFLICT, err.to_string()),
            AppError::Denied(denied) => {
                let status = match &denied {
                    crate::auth::Denied::NoToken(_) | crate::auth::Denied::BadToken(_) => {
                        StatusCode::UNAUTHORIZED
                    }
                    _ => StatusCode::FORBIDDEN,
                };
                Fault::new(status, denied.to_string())
            }
            AppError::DatabaseUnavailable(reason) => {
                tracing::warn!(%reason, "refused a change: database unavailable");
                Fault::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database is unavailable; the change was not made, try again.",
                )
            }
            AppError::Internal(reason) => {
                tracing::error!(%reason, "internal error");
                Fault::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error; see the server log.",
                )
            }
        }
    }
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        let body =
            json!({ self.name(): { "code": self.status.as_u16(), "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(crate::api::RETRY_AFTER_S),
            );
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limited_change_says_when_to_try_again() {
        let limited = Fault::from(AppError::RateLimited {
            who: "ops".into(),
            per_second: 1.0,
            burst: 1,
            retry_after_s: 3,
        })
        .into_response();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[axum::http::header::RETRY_AFTER], "3");
    }

    #[test]
    fn app_errors_take_cinder_fault_names() {
        let unavailable = Fault::from(AppError::DatabaseUnavailable("gone".into()));
        assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.name(), "serviceUnavailable");
        let invalid = Fault::from(AppError::Invalid {
            code: "invalid_disabled_reason".into(),
            message: "disabled_reason is too long".into(),
        });
        assert_eq!(invalid.name(), "badRequest");
        assert_eq!(
            invalid.message,
            "Invalid input received: disabled_reason is too long"
        );
        assert_eq!(Fault::from(AppError::NotFound(1)).name(), "itemNotFound");
        assert_eq!(
            Fault::new(StatusCode::NOT_ACCEPTABLE, "").name(),
            "computeFault"
        );
    }
}
