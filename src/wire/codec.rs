//! The two encodings of one schema: protobuf and the proto3 JSON mapping, chosen by content type.
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::WireError;

/// Records larger than this are refused before any parsing (dead-lettered on Kafka).
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

pub const CONTENT_TYPE_HEADER: &str = "content-type";
pub const JSON: &str = "application/json";
pub const PROTOBUF: &str = "application/x-protobuf";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Json,
    Protobuf,
}

impl Format {
    /// Reads a `content-type` value; JSON when absent. Parameters such as `; charset=utf-8` are ignored.
    pub fn from_content_type(value: Option<&[u8]>) -> Result<Format, WireError> {
        let Some(raw) = value else {
            return Ok(Format::Json);
        };
        let text = String::from_utf8_lossy(raw);
        let essence = text.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case(JSON) {
            Ok(Format::Json)
        } else if [
            PROTOBUF,
            "application/protobuf",
            "application/vnd.google.protobuf",
        ]
        .iter()
        .any(|t| essence.eq_ignore_ascii_case(t))
        {
            Ok(Format::Protobuf)
        } else {
            Err(WireError::UnsupportedContentType(
                text.chars().take(100).collect(),
            ))
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => JSON,
            Format::Protobuf => PROTOBUF,
        }
    }
}

/// Decodes one message, refusing oversized input first.
pub fn decode<M>(bytes: &[u8], format: Format) -> Result<M, WireError>
where
    M: Message + DeserializeOwned + Default,
{
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            limit: MAX_RECORD_BYTES,
        });
    }
    match format {
        Format::Json => Ok(serde_json::from_slice(bytes)?),
        Format::Protobuf => Ok(M::decode(bytes)?),
    }
}

pub fn encode<M>(message: &M, format: Format) -> Vec<u8>
where
    M: Message + Serialize,
{
    match format {
        Format::Json => serde_json::to_vec(message).expect("generated messages always serialize"),
        Format::Protobuf => message.encode_to_vec(),
    }
}
