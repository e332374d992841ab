//! Problem details (RFC 9457): every error of the admin API is an `application/problem+json` body
//! with a stable `type`, a short `title`, the HTTP `status` and a `detail` that says what to fix.
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The realm named in `WWW-Authenticate` challenges.
const REALM: &str = "autoclaim-admin";

/// One field that failed validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field in the request body, in its JSON (lowerCamelCase) name; dotted for nested fields.
    pub field: String,
    pub problem: String,
}

/// A problem details response. Boxed: it travels in `Err` through every handler.
#[derive(Clone, Debug)]
pub struct Problem(Box<ProblemBody>);

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProblemBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    #[serde(serialize_with = "status_code")]
    pub status: StatusCode,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    challenge: Option<String>,
    #[serde(skip)]
    retry_after_seconds: Option<u32>,
}

fn status_code<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
        .collect()
}

impl Problem {
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem(Box::new(ProblemBody {
            kind: format!("urn:autoclaim:problem:{slug}"),
            title,
            status,
            detail: detail.into(),
            errors: Vec::new(),
            challenge: None,
            retry_after_seconds: None,
        }))
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn body(&self) -> &ProblemBody {
        &self.0
    }

    /// 401 without credentials: the client is told to authenticate, and nothing more.
    pub fn missing_token() -> Self {
        let mut p = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
            "send a bearer token: Authorization: Bearer <JWT>",
        );
        p.0.challenge = Some(format!("Bearer realm=\"{REALM}\""));
        p
    }

    /// 401 for a token that is malformed, expired, not yet valid, badly signed or for another
    /// issuer or audience.
    pub fn invalid_token(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let mut p = Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "Invalid token",
            detail.clone(),
        );
        p.0.challenge = Some(format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
            quoted(&detail)
        ));
        p
    }

    /// 403 for a valid token of another tenant or without the Global Administrator role.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let mut p = Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not allowed",
            detail.clone(),
        );
        p.0.challenge = Some(format!(
            "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", error_description=\"{}\"",
            quoted(&detail)
        ));
        p
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail,
        )
    }

    /// 422: the body is well formed but breaks a rule; each broken rule is listed in `errors`.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.problem))
            .collect::<Vec<_>>()
            .join("; ");
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid request",
            detail,
        );
        p.0.errors = errors;
        p
    }

    pub fn invalid_field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Problem::invalid(vec![FieldError {
            field: field.into(),
            problem: problem.into(),
        }])
    }

    pub fn conflict(slug: &str, title: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, slug, title, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn method_not_allowed() -> Self {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this path does not support the method; see /v1/openapi.json",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Request body too large",
            format!("the body is over the limit of {limit} bytes"),
        )
    }

    /// 414: the URL is longer than any route needs.
    pub fn uri_too_long(limit: usize) -> Self {
        Problem::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            "URL too long",
            format!("the URL (path and query) is over the limit of {limit} bytes"),
        )
    }

    /// 431: the request line and headers do not fit the server's buffer.
    pub fn head_too_large(limit: usize) -> Self {
        Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request headers too large",
            format!(
                "the request line and headers are over the limit of {limit} bytes \
                 (a bearer token is at most 16 KiB)"
            ),
        )
    }

    /// 408: the body did not arrive in time.
    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            "Request timeout",
            format!(
                "the body did not arrive within {} of the headers",
                humantime::format_duration(limit)
            ),
        )
    }

    pub fn unsupported_media_type(expected: &str) -> Self {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("send the body with content-type {expected}"),
        )
    }

    /// 503: try again later (the view is loading, or the write could not be confirmed).
    pub fn unavailable(detail: impl Into<String>, retry_after_seconds: u32) -> Self {
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable",
            detail,
        );
        p.0.retry_after_seconds = Some(retry_after_seconds);
        p
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let problem = *self.0;
        let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (problem.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(challenge) = problem
            .challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = problem.retry_after_seconds {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
