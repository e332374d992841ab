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

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_types::{DescriptorProto, FileDescriptorSet};
    use serde_json::{json, Map, Value};

    use super::{decode, Format};
    use crate::wire::{pb, FILE_DESCRIPTOR_SET};

    /// The schema's messages with their fields' proto and JSON names.
    fn schema_messages() -> Vec<(String, Vec<(String, String)>)> {
        fn walk(scope: &str, m: &DescriptorProto, out: &mut Vec<(String, Vec<(String, String)>)>) {
            let name = format!("{scope}.{}", m.name());
            let fields = m
                .field
                .iter()
                .map(|f| (f.name().to_owned(), f.json_name().to_owned()))
                .collect();
            out.push((name.clone(), fields));
            for nested in &m.nested_type {
                walk(&name, nested, out);
            }
        }
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let mut out = Vec::new();
        for file in set.file.iter().filter(|f| f.package() == "autoclaim.v1") {
            for m in &file.message_type {
                walk(file.package(), m, &mut out);
            }
        }
        out
    }

    /// Decodes `json` as the message named `name`; whether it is that message's default.
    fn decodes_to_default(name: &str, json: &str) -> Result<bool, String> {
        fn check<M>(json: &str) -> Result<bool, String>
        where
            M: prost::Message + serde::de::DeserializeOwned + Default + PartialEq,
        {
            decode::<M>(json.as_bytes(), Format::Json)
                .map(|m| m == M::default())
                .map_err(|e| e.to_string())
        }
        match name {
            "autoclaim.v1.Flow" => check::<pb::Flow>(json),
            "autoclaim.v1.ActivityEvent" => check::<pb::ActivityEvent>(json),
            "autoclaim.v1.AssignedLicense" => check::<pb::AssignedLicense>(json),
            "autoclaim.v1.DirectoryUser" => check::<pb::DirectoryUser>(json),
            "autoclaim.v1.LicenseInventory" => check::<pb::LicenseInventory>(json),
            "autoclaim.v1.TenantSettings" => check::<pb::TenantSettings>(json),
            "autoclaim.v1.ExcludedApps" => check::<pb::ExcludedApps>(json),
            "autoclaim.v1.Policy" => check::<pb::Policy>(json),
            "autoclaim.v1.LicenseAssignment" => check::<pb::LicenseAssignment>(json),
            "autoclaim.v1.AutoclaimFailure" => check::<pb::AutoclaimFailure>(json),
            "autoclaim.v1.Decision" => check::<pb::Decision>(json),
            "autoclaim.v1.LicenseClaim" => check::<pb::LicenseClaim>(json),
            "autoclaim.v1.AdminNotice" => check::<pb::AdminNotice>(json),
            "autoclaim.v1.ReplayRecord" => check::<pb::ReplayRecord>(json),
            "autoclaim.v1.DirectoryUserDeleted" => check::<pb::DirectoryUserDeleted>(json),
            "autoclaim.v1.AuditActor" => check::<pb::AuditActor>(json),
            "autoclaim.v1.AuditedVersion" => check::<pb::AuditedVersion>(json),
            "autoclaim.v1.AuditEntry" => check::<pb::AuditEntry>(json),
            other => panic!("{other} is new in the schema: add it here"),
        }
    }

    #[test]
    fn null_is_the_default_for_every_field_of_every_message() {
        for (message, fields) in schema_messages() {
            for (proto_name, json_name) in &fields {
                for key in [proto_name, json_name] {
                    let json = json!({ key: null }).to_string();
                    assert_eq!(
                        decodes_to_default(&message, &json),
                        Ok(true),
                        "{message} {json}"
                    );
                }
            }
            let all_null: Map<String, Value> = fields
                .iter()
                .map(|(_, json_name)| (json_name.clone(), Value::Null))
                .collect();
            let json = Value::Object(all_null).to_string();
            assert_eq!(
                decodes_to_default(&message, &json),
                Ok(true),
                "{message} {json}"
            );
        }
    }

    #[test]
    fn null_gives_the_default_beside_other_fields() {
        let json = br#"{"tenantId":null,"product":"p","purchasedUnits":null,"assignedUnits":"3","asOf":null}"#;
        let m: pb::LicenseInventory = decode(json, Format::Json).unwrap();
        assert_eq!(
            m,
            pb::LicenseInventory {
                product: "p".into(),
                assigned_units: 3,
                ..Default::default()
            }
        );
        let json = br#"{"kind":null,"flow":{"triggerType":null,"usesAttendedRpa":null}}"#;
        let m: pb::ActivityEvent = decode(json, Format::Json).unwrap();
        assert_eq!(m.kind, 0);
        assert_eq!(m.flow, Some(pb::Flow::default()));
    }

    #[test]
    fn a_null_member_of_a_oneof_is_absent_wherever_it_is() {
        let inventory = Some(pb::replay_record::Record::Inventory(Default::default()));
        for json in [
            r#"{"activity":null,"inventory":{}}"#,
            r#"{"inventory":{},"activity":null}"#,
            r#"{"inventory":{},"activity":null,"directory_user":null}"#,
        ] {
            let m: pb::ReplayRecord = decode(json.as_bytes(), Format::Json).unwrap();
            assert_eq!(m.record, inventory, "{json}");
        }
        // Two members with values are still one too many.
        let two = br#"{"inventory":{},"activity":{}}"#;
        assert!(decode::<pb::ReplayRecord>(two, Format::Json).is_err());
    }

    #[test]
    fn null_is_still_refused_where_the_mapping_refuses_it() {
        for json in [
            // As an element of a repeated field, and as a whole record.
            r#"{"backupProducts":["power_automate_premium",null]}"#,
            r#"{"excludedApps":[null]}"#,
            "null",
        ] {
            assert!(
                decode::<pb::Policy>(json.as_bytes(), Format::Json).is_err(),
                "{json}"
            );
        }
        // A null field is still a field: naming it twice is a duplicate.
        let twice = br#"{"tenantId":null,"tenant_id":"t"}"#;
        assert!(decode::<pb::DirectoryUserDeleted>(twice, Format::Json).is_err());
    }
}
