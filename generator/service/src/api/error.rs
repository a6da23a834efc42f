//! API errors: an HTTP status and a JSON body with a stable `code` clients
//! can branch on, and a message for people.
//!
//! ```json
//! {"error": {"code": "platform_not_found", "message": "no platform named rpi9"}}
//! ```

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::RequestError;
use crate::auth::AuthError;
use crate::db::DbError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> ApiError {
        tracing::error!("{error}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            error.to_string(),
        )
    }
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> ApiError {
        let status = match &error {
            RequestError::Database(e) => {
                tracing::error!("{e}");
                StatusCode::SERVICE_UNAVAILABLE
            }
            RequestError::Queue(_) => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RequestError::ImageReference(_) => StatusCode::BAD_REQUEST,
            RequestError::PlatformNotFound(_) => StatusCode::NOT_FOUND,
            RequestError::ImageNotFound(_)
            | RequestError::Invalid(_)
            | RequestError::AppId { .. }
            | RequestError::Metadata(_)
            | RequestError::Incompatible(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        match error {
            AuthError::Unauthenticated(message) => ApiError::unauthorized(message),
            AuthError::Forbidden(_) | AuthError::OtherPlatform { .. } => ApiError::forbidden(error.to_string()),
            AuthError::Database(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not read, so the connection cannot
            // serve another request: say so, or the client reuses it and
            // its next request fails.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The service's own trouble is a 5xx (clients retry it), the request's
    /// a 4xx; the code travels unchanged.
    #[test]
    fn request_errors_become_statuses_only_here() {
        let cases = [
            (RequestError::ImageReference("x".into()), StatusCode::BAD_REQUEST),
            (
                RequestError::ImageNotFound("x".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (RequestError::Invalid("x".into()), StatusCode::UNPROCESSABLE_ENTITY),
            (RequestError::PlatformNotFound("p".into()), StatusCode::NOT_FOUND),
            (
                RequestError::AppId {
                    id: "..".into(),
                    reason: "r".into(),
                },
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (RequestError::Metadata("m".into()), StatusCode::UNPROCESSABLE_ENTITY),
            (
                RequestError::Incompatible(vec!["a".into()]),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                RequestError::Database(DbError::Query("q".into())),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (RequestError::Internal("i".into()), StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (error, status) in cases {
            let (code, transient, message) = (error.code(), error.is_transient(), error.to_string());
            let api = ApiError::from(error);
            assert_eq!(
                (api.status, api.code, api.message.as_str()),
                (status, code, message.as_str())
            );
            assert_eq!(transient, status.is_server_error(), "{code}");
        }
    }

    #[test]
    fn auth_errors_are_401_or_403() {
        let unauthenticated = ApiError::from(AuthError::Unauthenticated("unknown token"));
        assert_eq!(
            (unauthenticated.status, unauthenticated.code),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
        let forbidden = ApiError::from(AuthError::Forbidden(crate::auth::Role::Device));
        assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
        assert_eq!(forbidden.message, "the device role may not do this");
    }
}
