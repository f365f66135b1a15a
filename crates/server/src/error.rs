//! Maps the core's error table onto HTTP responses: one JSON shape for every error.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confiance_core::{Error, ErrorCode};

/// An error answered to an HTTP client, possibly with extra JSON fields (such as the list of
/// rejected messages of a batch).
#[derive(Debug)]
pub struct ApiError {
    error: Error,
    extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    /// An error of `code` saying `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::new(code, message).into()
    }

    /// The underlying error.
    pub fn into_error(self) -> Error {
        self.error
    }

    /// Adds a field to the JSON body.
    pub fn with(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value);
        self
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self { error, extra: None }
    }
}

impl From<confiance_store::StoreError> for ApiError {
    fn from(e: confiance_store::StoreError) -> Self {
        use confiance_store::StoreError as S;
        match e {
            S::Overloaded => ApiError::new(ErrorCode::Overloaded, "the store is saturated; retry later"),
            S::Conflict(what) => ApiError::new(ErrorCode::InvalidField, format!("{what} already exists")),
            S::Writer(why) => ApiError::new(ErrorCode::Internal, format!("the result could not be written: {why}")),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::new(ErrorCode::StoreUnavailable, "the store failed; nothing was stored")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.error.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = serde_json::to_value(self.error.body()).unwrap_or_default();
        if let (Some(obj), Some(extra)) = (body.as_object_mut(), self.extra) {
            obj.extend(extra);
        }
        let mut response = (status, axum::Json(body)).into_response();
        if self.error.code.error_type() == confiance_core::error::ErrorType::System {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
