//! Why a record could not be read. Every variant names what is wrong so that a dead letter or a
//! rejected replay line tells its producer what to fix.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum WireError {
    #[error("record is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error(
        "unsupported content-type {0:?} (expected application/json or application/x-protobuf)"
    )]
    UnsupportedContentType(String),
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("invalid JSON: {0}")]
    Json(JsonError),
    #[error("schema version {0} is newer than this build reads (1)")]
    UnknownSchemaVersion(u32),
    #[error("field {field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error("{0}")]
    Policy(#[from] crate::domain::policy::PolicyError),
    /// The key names another entity than the value (a producer bug that would put the record
    /// where another entity's records are, or let compaction drop the wrong one).
    #[error("the key {key:?} does not name what the value is about ({expected})")]
    KeyMismatch { key: String, expected: String },
    /// The event says it occurred later than its record was written, beyond the allowed clock
    /// skew: decided, it would be judged by policies not yet in force and hold a seat until then.
    #[error(transparent)]
    EventTimeInFuture(#[from] crate::domain::activity::EventTimeInFuture),
}

impl WireError {
    pub fn field(field: &'static str, problem: impl Into<String>) -> Self {
        WireError::Field {
            field,
            problem: problem.into(),
        }
    }

    /// A short, stable code for headers and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            WireError::TooLarge { .. } => "too_large",
            WireError::UnsupportedContentType(_) => "content_type",
            WireError::Protobuf(_) => "protobuf",
            WireError::Json(_) => "json",
            WireError::UnknownSchemaVersion(_) => "schema_version",
            WireError::Field { .. } => "invalid_field",
            WireError::Policy(_) => "invalid_policy",
            WireError::KeyMismatch { .. } => "key_mismatch",
            WireError::EventTimeInFuture(_) => "event_time_in_future",
        }
    }
}

/// A JSON error with the path of the field at fault (e.g. `flow.triggerType`).
#[derive(Debug, Error)]
#[error("{}{source}", if path.is_empty() || path == "." { String::new() } else { format!("field {path}: ") })]
pub struct JsonError {
    pub path: String,
    pub source: serde_json::Error,
}

impl From<serde_path_to_error::Error<serde_json::Error>> for WireError {
    fn from(e: serde_path_to_error::Error<serde_json::Error>) -> Self {
        WireError::Json(JsonError {
            path: e.path().to_string(),
            source: e.into_inner(),
        })
    }
}

impl From<serde_json::Error> for WireError {
    fn from(source: serde_json::Error) -> Self {
        WireError::Json(JsonError {
            path: String::new(),
            source,
        })
    }
}
