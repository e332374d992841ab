//! Reading the records of table and changelog topics into state updates. Pure functions of key,
//! value and content type, so they are tested without a broker.
use std::time::Duration;

use rdkafka::message::{Headers, Message};

use crate::domain::catalog::{Catalog, ProductId};
use crate::domain::directory::DirectoryUser;
use crate::domain::ids;
use crate::domain::time::Timestamp;
use crate::wire::claims::{ClaimRecord, NoticeRecord};
use crate::wire::convert::{self, InventoryRecord, PolicyRecord, SettingsRecord};
use crate::wire::{activity_json, codec, pb, Format, WireError};

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

    /// The key as text for an error message (lossy: it may not be UTF-8).
    fn key_lossy(&self) -> String {
        String::from_utf8_lossy(self.key.unwrap_or_default()).into_owned()
    }

    fn key_mismatch(&self, expected: String) -> WireError {
        WireError::KeyMismatch {
            key: self.key_lossy(),
            expected,
        }
    }
}

/// Whether `key` names `tenant` then, after a '/', exactly `rest`.
fn key_is(key: &str, tenant: &str, rest: &[&str]) -> bool {
    let mut parts = key.split('/');
    parts.next().is_some_and(|t| ids::same(t, tenant))
        && rest.iter().all(|r| parts.next() == Some(*r))
        && parts.next().is_none()
}

/// A record's headers as text, in order (names may repeat; values decoded lossily).
pub fn header_pairs<M: Message>(message: &M) -> Vec<(String, String)> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                    (h.key.to_owned(), value.into_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An update of the global tables (settings, policies, inventory).
pub enum TableUpdate {
    Settings(SettingsRecord),
    Policy(PolicyRecord),
    Inventory(InventoryRecord),
}

/// A record of the policies topic: keyed "<tenant>/settings" or "<tenant>/policy/<policyId>",
/// naming the tenant (and policy) of the value. Tombstones carry nothing to apply (`Ok(None)`):
/// deletion is a `deleted` version, which propagates.
pub fn policies_record(raw: &RawRecord<'_>) -> Result<Option<TableUpdate>, WireError> {
    let Some(value) = raw.value else {
        return Ok(None);
    };
    let key = raw.key_str()?;
    let format = raw.format()?;
    if key.ends_with("/settings") {
        let settings: pb::TenantSettings = codec::decode(value, format)?;
        let settings: SettingsRecord = settings.try_into()?;
        if !key_is(key, &settings.tenant_id, &["settings"]) {
            return Err(raw.key_mismatch(format!("{}/settings", settings.tenant_id)));
        }
        Ok(Some(TableUpdate::Settings(settings)))
    } else if key.contains("/policy/") {
        let policy: pb::Policy = codec::decode(value, format)?;
        let policy: PolicyRecord = policy.try_into()?;
        if !key_is(
            key,
            &policy.tenant_id,
            &["policy", &policy.policy.policy_id],
        ) {
            return Err(raw.key_mismatch(format!(
                "{}/policy/{}",
                policy.tenant_id, policy.policy.policy_id
            )));
        }
        Ok(Some(TableUpdate::Policy(policy)))
    } else {
        Err(WireError::field(
            "key",
            "expected <tenantId>/settings or <tenantId>/policy/<policyId>",
        ))
    }
}

/// A record of the inventory topic, keyed "<tenantId>/<product>" as its value.
pub fn inventory_record(raw: &RawRecord<'_>) -> Result<Option<TableUpdate>, WireError> {
    let Some(value) = raw.value else {
        return Ok(None);
    };
    let inventory: pb::LicenseInventory = codec::decode(value, raw.format()?)?;
    let inventory: InventoryRecord = inventory.try_into()?;
    let product = Catalog::product(inventory.product).key;
    let named = raw.key_str().ok().is_some_and(|key| {
        key.split_once('/').is_some_and(|(tenant, key_product)| {
            ids::same(tenant, &inventory.tenant_id)
                && Catalog::by_key(key_product) == Some(inventory.product)
        })
    });
    if !named {
        return Err(raw.key_mismatch(format!("{}/{product}", inventory.tenant_id)));
    }
    Ok(Some(TableUpdate::Inventory(inventory)))
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

/// A record of the directory topic, keyed "<tenantId>/<userId>" as its value; a tombstone deletes
/// the user its key names.
pub fn directory_record(raw: &RawRecord<'_>) -> Result<DirectoryChange, WireError> {
    let key = raw.key_str()?;
    let (tenant, user) = key
        .split_once('/')
        .filter(|(t, u)| !t.is_empty() && !u.is_empty())
        .ok_or_else(|| WireError::field("key", "must be <tenantId>/<userId>"))?;
    match raw.value {
        Some(value) => {
            let row: pb::DirectoryUser = codec::decode(value, raw.format()?)?;
            let row: DirectoryUser = row.try_into()?;
            if !(ids::same(tenant, &row.tenant_id) && ids::same(user, &row.user_id)) {
                return Err(raw.key_mismatch(format!("{}/{}", row.tenant_id, row.user_id)));
            }
            Ok(DirectoryChange::Upsert(row))
        }
        None => Ok(DirectoryChange::Delete {
            tenant_id: ids::canonical(tenant.to_owned()),
            user_id: ids::canonical(user.to_owned()),
        }),
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
        tenant_id: ids::canonical(a.tenant_id),
        user_id: ids::canonical(a.user_id),
    })
}

/// A record of the claims topic: a claim's latest change.
pub fn claim_record(raw: &RawRecord<'_>) -> Result<ClaimRecord, WireError> {
    let value = raw
        .value
        .ok_or_else(|| WireError::field("value", "a claim cannot be a tombstone"))?;
    let claim: pb::LicenseClaim = codec::decode(value, raw.format()?)?;
    ClaimRecord::try_from(claim)
}

/// A record of the notices topic.
pub fn notice_record(raw: &RawRecord<'_>) -> Result<NoticeRecord, WireError> {
    let value = raw
        .value
        .ok_or_else(|| WireError::field("value", "a notice cannot be a tombstone"))?;
    let notice: pb::AdminNotice = codec::decode(value, raw.format()?)?;
    NoticeRecord::try_from(notice)
}

/// When a record was written to Kafka: its timestamp (the producer's CreateTime, or the broker's
/// LogAppendTime where the topic says so); None when it has none.
pub fn written_at<M: Message>(message: &M) -> Option<Timestamp> {
    message
        .timestamp()
        .to_millis()
        .filter(|millis| *millis >= 0)
        .map(Timestamp::from_millis)
}

/// An activity record as read where it first arrives (the activity topic): `activity_record`, and
/// its event time bounded by the time the record was written (`Activity::check_event_time`).
pub fn bounded_activity_record(
    raw: &RawRecord<'_>,
    written_at: Option<Timestamp>,
    max_skew: Duration,
) -> Result<crate::domain::activity::Activity, WireError> {
    let event = activity_record(raw)?;
    event.check_event_time(written_at, max_skew)?;
    Ok(event)
}

/// An activity record into a validated event. Its key, if it has one, must be its tenant id (a
/// record without a key is placed by the tenant in its payload).
pub fn activity_record(
    raw: &RawRecord<'_>,
) -> Result<crate::domain::activity::Activity, WireError> {
    let value = raw
        .value
        .ok_or_else(|| WireError::field("value", "is empty (a tombstone is not an activity)"))?;
    let event: crate::domain::activity::Activity = match raw.format()? {
        Format::Json => activity_json::decode(value)?,
        format => codec::decode::<pb::ActivityEvent>(value, format)?.try_into()?,
    };
    if let Some(key) = raw.key {
        let names_tenant =
            std::str::from_utf8(key).is_ok_and(|key| ids::same(key, &event.tenant_id));
        if !names_tenant {
            return Err(raw.key_mismatch(format!("tenant id {}", event.tenant_id)));
        }
    }
    Ok(event)
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

    const GUID: &str = "6f9619ff-8b86-d011-b42d-00c04fc964ff";

    fn raw<'a>(key: Option<&'a [u8]>, value: &'a [u8]) -> RawRecord<'a> {
        RawRecord {
            key,
            value: Some(value),
            content_type: None,
        }
    }

    fn code<T>(result: Result<T, WireError>) -> &'static str {
        result.err().map_or("ok", |e| e.code())
    }

    #[test]
    fn an_activity_key_names_its_tenant_in_any_case_or_is_absent() {
        let event = format!(
            r#"{{"schemaVersion":1,"eventId":"e","tenantId":"{}","occurredAt":"2026-03-02T10:00:00Z","actorUserId":"u","kind":"LICENSE_REQUESTED","source":"PORTAL","requestedProduct":"power_automate_premium"}}"#,
            GUID.to_uppercase()
        );
        let value = event.as_bytes();
        let upper = GUID.to_uppercase();
        for key in [Some(GUID.as_bytes()), Some(upper.as_bytes()), None] {
            let read = activity_record(&raw(key, value)).expect("readable");
            assert_eq!(read.tenant_id, GUID, "the canonical form");
        }
        assert_eq!(
            code(activity_record(&raw(Some(b"contoso"), value))),
            "key_mismatch"
        );
        assert_eq!(
            code(activity_record(&raw(Some(b"\xff"), value))),
            "key_mismatch"
        );
    }

    #[test]
    fn an_activity_record_is_refused_when_its_event_is_beyond_the_skew_after_its_write_time() {
        let event = br#"{"eventId":"e","tenantId":"t","occurredAt":"2026-03-02T10:05:00Z","actorUserId":"u","kind":"LICENSE_REQUESTED","source":"PORTAL","requestedProduct":"power_automate_premium"}"#;
        let written = |text: &str| {
            let t = crate::wire::timestamp::parse_rfc3339(text).unwrap();
            Some(Timestamp::from_millis(t.seconds * 1000))
        };
        let skew = Duration::from_secs(300);
        let read = |at| code(bounded_activity_record(&raw(None, event), at, skew));
        assert_eq!(read(written("2026-03-02T10:00:00Z")), "ok", "at the bound");
        assert_eq!(
            read(written("2026-03-02T09:59:59Z")),
            "event_time_in_future"
        );
        assert_eq!(read(None), "ok", "no timestamp, no bound");
        // An unreadable record is refused for what makes it unreadable, whatever its time.
        assert_eq!(
            code(bounded_activity_record(
                &raw(Some(b"other"), event),
                written("2026-03-01T00:00:00Z"),
                skew
            )),
            "key_mismatch"
        );
    }

    #[test]
    fn table_keys_must_name_their_value() {
        let settings =
            br#"{"tenantId":"t","autoclaimEnabled":true,"changedAt":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(
            code(policies_record(&raw(Some(b"t/settings"), settings))),
            "ok"
        );
        assert_eq!(
            code(policies_record(&raw(Some(b"u/settings"), settings))),
            "key_mismatch"
        );
        let policy = br#"{"tenantId":"t","policyId":"p","name":"n","product":"power_automate_premium","createdAt":"2026-01-01T00:00:00Z","changedAt":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(
            code(policies_record(&raw(Some(b"t/policy/p"), policy))),
            "ok"
        );
        assert_eq!(
            code(policies_record(&raw(Some(b"t/policy/q"), policy))),
            "key_mismatch"
        );
        let inventory = br#"{"tenantId":"t","product":"power_automate_premium","purchasedUnits":5,"asOf":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(
            code(inventory_record(&raw(
                Some(b"t/power_automate_premium"),
                inventory
            ))),
            "ok"
        );
        for key in [
            &b"t/power_automate_per_user"[..],
            b"x/power_automate_premium",
            b"t",
        ] {
            assert_eq!(
                code(inventory_record(&raw(Some(key), inventory))),
                "key_mismatch"
            );
        }
        assert_eq!(
            code(inventory_record(&raw(None, inventory))),
            "key_mismatch"
        );
        let user = format!(
            r#"{{"tenantId":"{GUID}","userId":"u1","accountEnabled":true,"userType":"MEMBER","asOf":"2026-01-01T00:00:00Z"}}"#
        );
        let upper_key = format!("{}/u1", GUID.to_uppercase());
        assert_eq!(
            code(directory_record(&raw(
                Some(upper_key.as_bytes()),
                user.as_bytes()
            ))),
            "ok"
        );
        let other = format!("{GUID}/u2");
        assert_eq!(
            code(directory_record(&raw(
                Some(other.as_bytes()),
                user.as_bytes()
            ))),
            "key_mismatch"
        );
    }

    #[test]
    fn a_directory_tombstone_deletes_the_canonical_row_its_key_names() {
        let key = format!("{}/{}", GUID.to_uppercase(), "User-1");
        let tombstone = RawRecord {
            key: Some(key.as_bytes()),
            value: None,
            content_type: None,
        };
        match directory_record(&tombstone).unwrap() {
            DirectoryChange::Delete { tenant_id, user_id } => {
                assert_eq!((tenant_id.as_str(), user_id.as_str()), (GUID, "User-1"));
            }
            DirectoryChange::Upsert(_) => panic!("expected a delete"),
        }
    }
}
