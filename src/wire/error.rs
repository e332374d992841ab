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
    Json(#[from] serde_json::Error),
    #[error("schema version {0} is newer than this build reads (1)")]
    UnknownSchemaVersion(u32),
    #[error("field {field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error("{0}")]
    Policy(#[from] crate::domain::policy::PolicyError),
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
        }
    }
}
