//! The one table of error codes.
//!
//! # Design
//!
//! Every error that leaves Confiance — an HTTP response, a rejected message inside a batch, a
//! rejected CSV row — carries one of these codes. Each code maps to exactly one HTTP status, a
//! stable snake_case name clients can match on, a broad type, and a documentation anchor, so
//! that the web layer never invents statuses and the same mistake reads the same everywhere.
//! The table lives in the core, not in the web framework, because the collect pipeline decides
//! what is wrong long before anything knows about HTTP.

use serde::Serialize;
use std::fmt;

/// A stable error code. See [`ErrorCode::name`] for the wire name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body is not valid JSON (or not the expected JSON shape).
    InvalidJson,
    /// The body is compressed with an encoding other than gzip, or the gzip stream is corrupt.
    InvalidEncoding,
    /// The request body is over 500 KB.
    RequestTooLarge,
    /// One message is over 32 KB.
    MessageTooLarge,
    /// A batch holds more than 2,500 messages.
    BatchTooLarge,
    /// No write key in the `Authorization` header nor in the body.
    MissingWriteKey,
    /// The write key matches no source.
    InvalidWriteKey,
    /// A field the message type requires is absent or null.
    MissingField,
    /// A field has the wrong type or an invalid value.
    InvalidField,
    /// A timestamp is not ISO-8601.
    InvalidTimestamp,
    /// The message type is not one of the Segment types.
    UnknownMessageType,
    /// The event is not declared in the data catalog, so it is not collected.
    UndeclaredEvent,
    /// Every message of a batch was rejected.
    NoValidMessage,
    /// No bearer token on an admin route.
    MissingToken,
    /// The bearer token is unknown.
    InvalidToken,
    /// The token is valid but its role may not do this.
    Forbidden,
    /// A query-string parameter is missing or invalid.
    InvalidQuery,
    /// A part of the path (an id) does not parse.
    InvalidPath,
    /// The path exists, but not with this HTTP method.
    MethodNotAllowed,
    /// Nothing at this path or with this id.
    NotFound,
    /// The notice the person saw is not the current one: the page must reload the banner.
    StaleNotice,
    /// An identity check failed: wrong or expired code, or too many attempts.
    VerificationFailed,
    /// A segment query does not parse, or reads data its purpose may not use.
    InvalidSegment,
    /// The server is shedding load; retry after the `Retry-After` delay.
    Overloaded,
    /// The store failed; nothing was acknowledged.
    StoreUnavailable,
    /// An unexpected failure.
    Internal,
}

/// The broad family of an error, for clients that only branch on that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The request is wrong; retrying it unchanged fails again.
    InvalidRequest,
    /// Authentication or authorisation failed.
    Auth,
    /// Confiance could not serve a valid request; retrying may succeed.
    System,
}

impl ErrorCode {
    /// Every code, in table order (used to document them all).
    pub const ALL: [ErrorCode; 26] = [
        Self::InvalidJson,
        Self::InvalidEncoding,
        Self::RequestTooLarge,
        Self::MessageTooLarge,
        Self::BatchTooLarge,
        Self::MissingWriteKey,
        Self::InvalidWriteKey,
        Self::MissingField,
        Self::InvalidField,
        Self::InvalidTimestamp,
        Self::UnknownMessageType,
        Self::UndeclaredEvent,
        Self::NoValidMessage,
        Self::MissingToken,
        Self::InvalidToken,
        Self::Forbidden,
        Self::InvalidQuery,
        Self::InvalidPath,
        Self::MethodNotAllowed,
        Self::NotFound,
        Self::StaleNotice,
        Self::VerificationFailed,
        Self::InvalidSegment,
        Self::Overloaded,
        Self::StoreUnavailable,
        Self::Internal,
    ];

    /// The row of the table: HTTP status, wire name, type.
    const fn row(self) -> (u16, &'static str, ErrorType) {
        use ErrorType::*;
        match self {
            Self::InvalidJson => (400, "invalid_json", InvalidRequest),
            Self::InvalidEncoding => (400, "invalid_encoding", InvalidRequest),
            Self::RequestTooLarge => (400, "request_too_large", InvalidRequest),
            Self::MessageTooLarge => (400, "message_too_large", InvalidRequest),
            Self::BatchTooLarge => (400, "batch_too_large", InvalidRequest),
            Self::MissingWriteKey => (401, "missing_write_key", Auth),
            Self::InvalidWriteKey => (401, "invalid_write_key", Auth),
            Self::MissingField => (400, "missing_field", InvalidRequest),
            Self::InvalidField => (400, "invalid_field", InvalidRequest),
            Self::InvalidTimestamp => (400, "invalid_timestamp", InvalidRequest),
            Self::UnknownMessageType => (400, "unknown_message_type", InvalidRequest),
            Self::UndeclaredEvent => (400, "undeclared_event", InvalidRequest),
            Self::NoValidMessage => (400, "no_valid_message", InvalidRequest),
            Self::MissingToken => (401, "missing_token", Auth),
            Self::InvalidToken => (401, "invalid_token", Auth),
            Self::Forbidden => (403, "forbidden", Auth),
            Self::InvalidQuery => (400, "invalid_query", InvalidRequest),
            Self::InvalidPath => (400, "invalid_path", InvalidRequest),
            Self::MethodNotAllowed => (405, "method_not_allowed", InvalidRequest),
            Self::NotFound => (404, "not_found", InvalidRequest),
            Self::StaleNotice => (409, "stale_notice", InvalidRequest),
            Self::VerificationFailed => (403, "verification_failed", Auth),
            Self::InvalidSegment => (400, "invalid_segment", InvalidRequest),
            Self::Overloaded => (503, "overloaded", System),
            Self::StoreUnavailable => (503, "store_unavailable", System),
            Self::Internal => (500, "internal", System),
        }
    }

    /// The HTTP status this code is answered with.
    pub const fn status(self) -> u16 {
        self.row().0
    }

    /// The stable snake_case name sent on the wire.
    pub const fn name(self) -> &'static str {
        self.row().1
    }

    /// The broad family of the error.
    pub const fn error_type(self) -> ErrorType {
        self.row().2
    }

    /// Where the code is documented.
    pub fn doc_link(self) -> String {
        format!("https://confiance.dev/docs/errors#{}", self.name())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// An error with its code and a message that names the problem.
///
/// The message never quotes personal data from the input: it names fields, limits and
/// positions, not values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// What kind of error.
    pub code: ErrorCode,
    /// A human-readable sentence naming the problem.
    pub message: String,
}

impl Error {
    /// An error of `code` saying `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The one JSON shape every error leaves as.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// Wire name of the code.
    pub code: ErrorCode,
    /// What went wrong.
    pub message: &'a str,
    /// The error's family.
    #[serde(rename = "type")]
    pub error_type: ErrorType,
    /// Documentation of the code.
    pub link: String,
}

impl Error {
    /// The JSON body for this error.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            code: self.code,
            message: &self.message,
            error_type: self.code.error_type(),
            link: self.code.doc_link(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_snake_case() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.name()), "duplicate name {}", code.name());
            assert!(code.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert!((400..600).contains(&code.status()));
        }
    }
}
