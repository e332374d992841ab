//! Reading the records of table and changelog topics into state updates. Pure functions of key,
//! value and content type, so they are tested without a broker.
use rdkafka::message::{Headers, Message};

use crate::domain::catalog::ProductId;
use crate::domain::directory::DirectoryUser;
use crate::domain::time::Timestamp;
use crate::wire::convert::{self, InventoryRecord, PolicyRecord, SettingsRecord};
use crate::wire::{codec, pb, Format, WireError};

/// The raw parts of a Kafka record that decoding needs.
pub struct RawRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub content_type: Option<&'a [u8]>,
}

impl<'a> RawRecord<'a> {
    pub fn of<M: Message>(message: &'a M) -> Self {
        let content_type = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key.eq_ignore_ascii_case(codec::CONTENT_TYPE_HEADER))
                .and_then(|h| h.value)
        });
        RawRecord {
            key: message.key(),
            value: message.payload(),
            content_type,
        }
    }

    fn format(&self) -> Result<Format, WireError> {
        Format::from_content_type(self.content_type)
    }

    fn key_str(&self) -> Result<&'a str, WireError> {
        let key = self
            .key
            .ok_or_else(|| WireError::field("key", "is required"))?;
        std::str::from_utf8(key).map_err(|_| WireError::field("key", "is not UTF-8"))
    }
}

/// An update of the global tables (settings, policies, inventory).
pub enum TableUpdate {
    Settings(SettingsRecord),
    Policy(PolicyRecord),
    Inventory(InventoryRecord),
}

/// A record of the policies topic: keyed "<tenant>/settings" or "<tenant>/policy/<policyId>".
/// Tombstones carry nothing to apply (`Ok(None)`): deletion is a `deleted` version, which propagates.
pub fn policies_record(raw: &RawRecord<'_>) -> Result<Option<TableUpdate>, WireError> {
    let Some(value) = raw.value else {
        return Ok(None);
    };
    let key = raw.key_str()?;
    let format = raw.format()?;
    if key.ends_with("/settings") {
        let settings: pb::TenantSettings = codec::decode(value, format)?;
        Ok(Some(TableUpdate::Settings(settings.try_into()?)))
    } else if key.contains("/policy/") {
        let policy: pb::Policy = codec::decode(value, format)?;
        Ok(Some(TableUpdate::Policy(policy.try_into()?)))
    } else {
        Err(WireError::field(
            "key",
            "expected <tenantId>/settings or <tenantId>/policy/<policyId>",
        ))
    }
}

/// A record of the inventory topic.
pub fn inventory_record(raw: &RawRecord<'_>) -> Result<Option<TableUpdate>, WireError> {
    let Some(value) = raw.value else {
        return Ok(None);
    };
    let inventory: pb::LicenseInventory = codec::decode(value, raw.format()?)?;
    Ok(Some(TableUpdate::Inventory(inventory.try_into()?)))
}

/// A change of one directory user.
pub enum DirectoryChange {
    Upsert(DirectoryUser),
    Delete { tenant_id: String, user_id: String },
}

impl DirectoryChange {
    pub fn tenant_id(&self) -> &str {
        match self {
            DirectoryChange::Upsert(u) => &u.tenant_id,
            DirectoryChange::Delete { tenant_id, .. } => tenant_id,
        }
    }
}

/// A record of the directory topic, keyed "<tenantId>/<userId>"; a tombstone deletes the user.
pub fn directory_record(raw: &RawRecord<'_>) -> Result<DirectoryChange, WireError> {
    match raw.value {
        Some(value) => {
            let user: pb::DirectoryUser = codec::decode(value, raw.format()?)?;
            Ok(DirectoryChange::Upsert(user.try_into()?))
        }
        None => {
            let (tenant, user) = raw
                .key_str()?
                .split_once('/')
                .filter(|(t, u)| !t.is_empty() && !u.is_empty())
                .ok_or_else(|| {
                    WireError::field("key", "a tombstone's key must be <tenantId>/<userId>")
                })?;
            Ok(DirectoryChange::Delete {
                tenant_id: tenant.to_owned(),
                user_id: user.to_owned(),
            })
        }
    }
}

/// What state needs of an assignment read back from the changelog.
#[derive(Debug, PartialEq, Eq)]
pub struct PastAssignment {
    pub tenant_id: String,
    pub user_id: String,
    pub product: ProductId,
    /// From when it counts against seats (occurredAt for records written before the field existed).
    pub seats_counted_from: Timestamp,
}

pub fn assignment_record(raw: &RawRecord<'_>) -> Result<PastAssignment, WireError> {
    let value = raw
        .value
        .ok_or_else(|| WireError::field("value", "an assignment cannot be a tombstone"))?;
    let a: pb::LicenseAssignment = codec::decode(value, raw.format()?)?;
    let occurred_at = convert::timestamp("occurredAt", a.occurred_at)?;
    Ok(PastAssignment {
        product: convert::product("product", &a.product)?,
        seats_counted_from: match a.seats_counted_from {
            Some(t) => convert::timestamp("seatsCountedFrom", Some(t))?,
            None => occurred_at,
        },
        tenant_id: a.tenant_id,
        user_id: a.user_id,
    })
}

/// An activity record into a validated event.
pub fn activity_record(
    raw: &RawRecord<'_>,
) -> Result<crate::domain::activity::Activity, WireError> {
    let value = raw
        .value
        .ok_or_else(|| WireError::field("value", "is empty (a tombstone is not an activity)"))?;
    let event: pb::ActivityEvent = codec::decode(value, raw.format()?)?;
    event.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_topic_keys_select_the_message() {
        let settings =
            br#"{"tenantId":"t","autoclaimEnabled":true,"changedAt":"2026-01-01T00:00:00Z"}"#;
        let raw = RawRecord {
            key: Some(b"t/settings"),
            value: Some(settings),
            content_type: None,
        };
        assert!(matches!(
            policies_record(&raw),
            Ok(Some(TableUpdate::Settings(_)))
        ));
        let raw = RawRecord {
            key: Some(b"t/other"),
            value: Some(settings),
            content_type: None,
        };
        assert!(policies_record(&raw).is_err());
        let tombstone = RawRecord {
            key: Some(b"t/policy/p"),
            value: None,
            content_type: None,
        };
        assert!(matches!(policies_record(&tombstone), Ok(None)));
    }

    #[test]
    fn directory_tombstones_delete_by_key() {
        let raw = RawRecord {
            key: Some(b"t1/u1"),
            value: None,
            content_type: None,
        };
        match directory_record(&raw).unwrap() {
            DirectoryChange::Delete { tenant_id, user_id } => {
                assert_eq!((tenant_id.as_str(), user_id.as_str()), ("t1", "u1"));
            }
            DirectoryChange::Upsert(_) => panic!("expected a delete"),
        }
        let bad = RawRecord {
            key: Some(b"no-slash"),
            value: None,
            content_type: None,
        };
        assert!(directory_record(&bad).is_err());
    }
}
