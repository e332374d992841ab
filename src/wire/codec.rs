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
        Format::Json => match from_json(bytes) {
            Ok(message) => Ok(message),
            // Tracking the path costs about a third of a decode, so only a failed decode pays it,
            // to name the field at fault.
            Err(plain) => {
                Err(future_schema(bytes).unwrap_or_else(|| json_error_with_path::<M>(bytes, plain)))
            }
        },
        Format::Protobuf => Ok(M::decode(bytes)?),
    }
}

/// Checks UTF-8 once for the whole record (std's check is a fast scan of ASCII) so that serde_json
/// need not check each string again; invalid UTF-8 goes to serde_json as bytes, for its error.
fn from_json<M: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<M> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

fn json_error_with_path<M: DeserializeOwned>(bytes: &[u8], plain: serde_json::Error) -> WireError {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, M>(&mut deserializer) {
        Err(e) => e.into(),
        // The value parsed; what failed is what follows it (trailing characters).
        Ok(_) => plain.into(),
    }
}

/// A record from a newer schema may carry fields this build does not know; say that it is from a
/// newer schema (as protobuf decoding does) rather than that a field is unknown.
fn future_schema(bytes: &[u8]) -> Option<WireError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let version = value
        .get("schemaVersion")
        .or_else(|| value.get("schema_version"))?
        .as_u64()?;
    // Only a value the field can hold is a version; anything else is a plain type error.
    let version = u32::try_from(version).ok()?;
    (version > super::convert::SCHEMA_VERSION).then_some(WireError::UnknownSchemaVersion(version))
}

pub fn encode<M>(message: &M, format: Format) -> Vec<u8>
where
    M: Message + Serialize,
{
    match format {
        Format::Json => serde_json::to_vec(message)
            .expect("generated messages serialize (to_wire_timestamp keeps Timestamps in range)"),
        Format::Protobuf => message.encode_to_vec(),
    }
}
