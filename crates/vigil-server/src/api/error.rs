//! The one error type of the Vigil API: every failure is answered as
//! `{"error":{"code":"<stable_snake_case>","message":"<human text>"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use vigil_proto::{ErrorBody, ErrorDetail};

use crate::app::AppError;

/// An HTTP status with a stable code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Seconds for `Retry-After`, besides the 503s' fixed one.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl From<AppError> for ApiError {
    fn from(err: AppError) -> Self {
        match &err {
            AppError::DatabaseUnavailable(reason) => {
                tracing::warn!(%reason, "refused a change: database unavailable");
            }
            AppError::Internal(reason) => tracing::error!(%reason, "internal error"),
            _ => {}
        }
        ApiError::unlogged(err)
    }
}

impl From<crate::auth::Denied> for ApiError {
    fn from(denied: crate::auth::Denied) -> Self {
        use crate::auth::Denied;
        match denied {
            Denied::NoToken(m) | Denied::BadToken(m) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
            }
            Denied::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            Denied::HostNotAllowed(m) => {
                ApiError::new(StatusCode::FORBIDDEN, "host_not_allowed", m)
            }
        }
    }
}

impl ApiError {
    /// The answer to `err`, without logging it: for the items of a batch, whose errors the
    /// batch logs once.
    pub(crate) fn unlogged(err: AppError) -> ApiError {
        match err {
            AppError::Invalid { code, message } => ApiError {
                status: StatusCode::BAD_REQUEST,
                code,
                message,
                retry_after: None,
            },
            AppError::RateLimited { retry_after_s, .. } => ApiError {
                retry_after: Some(retry_after_s),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    err.to_string(),
                )
            },
            AppError::TooManyServices(_) => {
                ApiError::new(StatusCode::CONFLICT, "too_many_services", err.to_string())
            }
            AppError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "service_not_found", err.to_string())
            }
            AppError::ServiceUp { .. } => {
                ApiError::new(StatusCode::CONFLICT, "service_up", err.to_string())
            }
            AppError::ReadOnlySource { .. } => {
                ApiError::new(StatusCode::CONFLICT, "read_only_source", err.to_string())
            }
            AppError::Denied(denied) => ApiError::from(denied),
            AppError::TokenNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "token_not_found", err.to_string())
            }
            AppError::TokenExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "token_exists", err.to_string())
            }
            AppError::MaintenanceNotFound(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "maintenance_not_found",
                err.to_string(),
            ),
            AppError::DatabaseUnavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database is unavailable; the change was not made, try again",
            ),
            AppError::Internal(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_S),
            );
        }
        response
    }
}

/// Seconds a client should wait before retrying a 503 (`Retry-After`).
pub const RETRY_AFTER_S: &str = "1";
