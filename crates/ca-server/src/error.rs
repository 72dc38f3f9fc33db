//! The server's errors: [`ServerError`] for starting and running it, and [`ApiError`], one
//! refused request — an HTTP status and a sentence, sent as `{"error": "<sentence>"}`. The
//! status of an authority error is the one its [`ErrorKind`] names; the sentence is its
//! own text, never Debug output.

use std::net::SocketAddr;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use mtlsgate_authority::{AuthorityError, ErrorKind};

use crate::wire::ErrorBody;

/// Seconds a client should wait after a 503 (the inventory database is away).
pub const RETRY_AFTER_UNAVAILABLE: u32 = 5;

/// Seconds a client should wait after a 429 (too many token-less enrollments, or the
/// approval queue is full).
pub const RETRY_AFTER_TOO_MANY: u32 = 60;

/// Errors starting or running the CA server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("cannot issue the server's own certificate: {0}")]
    ServerCertificate(AuthorityError),
    #[error("the server's TLS configuration cannot be built: {0}")]
    Tls(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A refused request: its status and the sentence that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The HTTP status of an authority error's kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadInput => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Gone => StatusCode::GONE,
        ErrorKind::TooMany => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<AuthorityError> for ApiError {
    fn from(e: AuthorityError) -> Self {
        let status = status_of(e.kind());
        if status.is_server_error() {
            tracing::warn!("{e}");
        }
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.message,
        })
        .unwrap_or_else(|_| br#"{"error": "the error could not be written"}"#.to_vec());
        let mut r = (
            self.status,
            [(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER_UNAVAILABLE),
            );
        } else if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER_TOO_MANY),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_status() {
        let cases = [
            (ErrorKind::BadInput, 400),
            (ErrorKind::Unauthenticated, 401),
            (ErrorKind::Forbidden, 403),
            (ErrorKind::NotFound, 404),
            (ErrorKind::Conflict, 409),
            (ErrorKind::Gone, 410),
            (ErrorKind::TooMany, 429),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Internal, 500),
        ];
        for (k, s) in cases {
            assert_eq!(status_of(k).as_u16(), s, "{k:?}");
        }
    }

    #[test]
    fn authority_errors_keep_their_sentence() {
        let e = ApiError::from(AuthorityError::BadTag { tag: "a b".into() });
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "invalid tag `a b`: use 1 to 64 letters, digits and - _ . : / ="
        );
        let e = ApiError::from(AuthorityError::NotAdmin {
            subject: "CN=dev1".into(),
        });
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e
            .message
            .starts_with("the client certificate CN=dev1 is not an administrator's"));
    }
}
