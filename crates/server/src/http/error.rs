//! The one HTTP error type. Every failure becomes a JSON body with a 4xx
//! status; a 5xx is always a bug (or the database being down) and its cause
//! is logged, never sent to the client.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use klaxon_store::StoreError;
use serde_json::json;

/// Field name → messages, as in `{"errors": {"message": ["can't be blank"]}}`.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request could not be read (malformed JSON, bad encoding).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or bad credentials.
    #[error("authentication required")]
    Unauthorized,
    /// 403: authenticated, but the role does not allow this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404: no such resource in the caller's account.
    #[error("not found")]
    NotFound,
    /// 405: the path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: conflicts with the resource's current state.
    #[error("{0}")]
    Conflict(String),
    /// 408: the body did not arrive within `app::BODY_TIMEOUT`.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// 413: body over the limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 415: neither JSON nor form-encoded.
    #[error("unsupported content type")]
    UnsupportedMediaType,
    /// 422: field validation failed.
    #[error("validation failed")]
    Unprocessable(FieldErrors),
    /// 429: over a rate limit, or the password hashing pool is full; try
    /// again after `retry_after` seconds (sent as `Retry-After`).
    #[error("{message}")]
    TooManyRequests {
        /// What was limited.
        message: &'static str,
        /// Whole seconds, at least 1.
        retry_after: u64,
    },
    /// 503: the database cannot be reached.
    #[error("service unavailable")]
    Unavailable,
    /// 500: a bug. Logged with its cause chain.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 422 for one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut errors = FieldErrors::new();
        errors.insert(field.to_owned(), vec![message.into()]);
        ApiError::Unprocessable(errors)
    }
}

impl From<crate::password::Busy> for ApiError {
    fn from(_: crate::password::Busy) -> Self {
        ApiError::TooManyRequests {
            message: "too many sign-ins and password changes in progress; try again shortly",
            retry_after: 1,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Taken(field) => ApiError::field(field, "has already been taken"),
            StoreError::Invalid { field, message } => ApiError::field(field, message),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Transition(t) => ApiError::Conflict(t.to_string()),
            other if other.is_unavailable() => ApiError::Unavailable,
            other => ApiError::Internal(anyhow::Error::new(other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unprocessable(errors) => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(json!({ "errors": errors })),
                )
                    .into_response();
            }
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
            }
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(err) => {
                tracing::error!(error = ?err, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let message = match &self {
            ApiError::Internal(_) => "internal error".to_owned(),
            ApiError::UnsupportedMediaType => {
                "send application/json or application/x-www-form-urlencoded".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            axum::Json(json!({ "error": code, "message": message })),
        )
            .into_response();
        if let ApiError::TooManyRequests { retry_after, .. } = &self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Token realm=\"klaxon\""),
            );
        }
        response
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
