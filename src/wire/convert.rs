//! From wire messages to validated domain values. Each check says which field is wrong and why.
use std::borrow::Cow;

use pbjson_types::Timestamp as WireTimestamp;

use super::activity_fields::{ActivityFields, FlowFields};
use super::error::WireError;
use super::generated as pb;
use crate::domain::activity::{Activity, ActivityKind, ActivitySource, FlowInfo, TriggerType};
use crate::domain::catalog::{Catalog, ProductId};
use crate::domain::directory::{DirectoryLicense, DirectoryUser};
use crate::domain::policy::Policy;
use crate::domain::seats::Inventory;
use crate::domain::settings::{Scope, TenantSettings};
use crate::domain::time::Timestamp;

/// Identifiers longer than this are refused: they bound the memory one record can claim in state.
pub const MAX_ID_LEN: usize = 256;
/// Licences one directory user may list.
pub const MAX_LICENSES: usize = 64;
/// Disabled plans one licence may list.
pub const MAX_PLANS: usize = 64;
/// The schema version this build reads. 0 (absent) is read as 1.
pub const SCHEMA_VERSION: u32 = 1;

fn id<'a>(field: &'static str, value: impl Into<Cow<'a, str>>) -> Result<String, WireError> {
    let value = value.into();
    if value.is_empty() {
        return Err(WireError::field(field, "is required"));
    }
    optional_id(field, value)
}

/// A required tenant or user id, in its canonical form (a GUID in lowercase: Entra's ids are
/// case-insensitive).
pub fn entity_id<'a>(
    field: &'static str,
    value: impl Into<Cow<'a, str>>,
) -> Result<String, WireError> {
    id(field, value).map(crate::domain::ids::canonical)
}

/// Checked while borrowed, so that a borrowed id that is refused is never copied.
fn optional_id<'a>(
    field: &'static str,
    value: impl Into<Cow<'a, str>>,
) -> Result<String, WireError> {
    let value = value.into();
    if value.len() > MAX_ID_LEN {
        return Err(WireError::field(
            field,
            format!("is {} bytes, over the limit of {MAX_ID_LEN}", value.len()),
        ));
    }
    if contains_control_characters(&value) {
        return Err(WireError::field(field, "contains control characters"));
    }
    Ok(value.into_owned())
}

/// Ids are almost always printable ASCII, which one pass over the bytes confirms; only other text is
/// decoded into chars (a quarter of an event's validation when done for every id). The pass does not
/// stop early, so that it vectorises: three times faster than `all` on GUIDs.
fn contains_control_characters(value: &str) -> bool {
    let printable_ascii = value
        .bytes()
        .fold(true, |ok, b| ok & (b.wrapping_sub(0x20) < 0x5f));
    !printable_ascii && value.chars().any(char::is_control)
}

// Earliest and latest instants accepted: years 1970 to 9999, which RFC 3339 can print.
const MIN_SECONDS: i64 = 0;
const MAX_SECONDS: i64 = 253_402_300_799;

pub fn timestamp(
    field: &'static str,
    value: Option<WireTimestamp>,
) -> Result<Timestamp, WireError> {
    let ts = value.ok_or_else(|| WireError::field(field, "is required"))?;
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos)
    {
        return Err(WireError::field(
            field,
            format!(
                "{}s {}ns is not a time between 1970 and 9999",
                ts.seconds, ts.nanos
            ),
        ));
    }
    Ok(Timestamp::from_millis(
        ts.seconds * 1000 + i64::from(ts.nanos / 1_000_000),
    ))
}

/// Saturates at the ends of the range a Timestamp may hold (years 0001 to 9999), outside which the
/// JSON mapping has no text for it: `seatsCountedFrom` may be 1 ms after an inventory snapshot as of
/// 9999-12-31T23:59:59.999Z, and writing a record must not fail.
pub fn to_wire_timestamp(t: Timestamp) -> WireTimestamp {
    const EARLIEST: i64 = super::timestamp::MIN_SECONDS * 1000;
    const LATEST: i64 = super::timestamp::MAX_SECONDS * 1000 + 999;
    let millis = t.as_millis().clamp(EARLIEST, LATEST);
    WireTimestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn product(field: &'static str, key: &str) -> Result<ProductId, WireError> {
    if key.is_empty() {
        return Err(WireError::field(field, "is required"));
    }
    Catalog::by_key(key).ok_or_else(|| {
        WireError::field(
            field,
            format!(
                "{:?} is not a catalog product (known: {})",
                truncate(key),
                Catalog::keys().collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn known_enum<E: TryFrom<i32>>(field: &'static str, value: i32) -> Result<E, WireError> {
    if value == 0 {
        return Err(WireError::field(field, "is required"));
    }
    E::try_from(value).map_err(|_| WireError::field(field, format!("unknown value {value}")))
}

fn check_schema_version(version: u32) -> Result<(), WireError> {
    if version > SCHEMA_VERSION {
        return Err(WireError::UnknownSchemaVersion(version));
    }
    Ok(())
}

impl TryFrom<pb::ActivityEvent> for Activity {
    type Error = WireError;

    fn try_from(e: pb::ActivityEvent) -> Result<Self, WireError> {
        activity(ActivityFields::from(e))
    }
}

/// A validated event from its fields, whichever decoder read them.
pub fn activity(e: ActivityFields<'_>) -> Result<Activity, WireError> {
    check_schema_version(e.schema_version)?;
    let kind = activity_kind(e.kind)?;
    let source = match known_enum::<pb::ActivitySource>("source", e.source)? {
        pb::ActivitySource::Unspecified => unreachable!("0 is refused by known_enum"),
        pb::ActivitySource::Portal => ActivitySource::Portal,
        pb::ActivitySource::Desktop => ActivitySource::Desktop,
    };
    if source != kind.expected_source() {
        return Err(WireError::field(
            "source",
            format!("{kind:?} events come from {:?}", kind.expected_source()),
        ));
    }
    let flow = match (kind.is_cloud_flow(), e.flow) {
        (true, None) => {
            return Err(WireError::field(
                "flow",
                "is required for cloud-flow events",
            ))
        }
        (true, Some(flow)) => Some(flow_info(flow)?),
        // Other kinds do not use a flow; one that is sent anyway is ignored.
        (false, _) => None,
    };
    let requested_product = if kind == ActivityKind::LicenseRequested {
        Some(product("requestedProduct", &e.requested_product)?)
    } else {
        None
    };
    Ok(Activity {
        event_id: id("eventId", e.event_id)?,
        tenant_id: entity_id("tenantId", e.tenant_id)?,
        occurred_at: timestamp("occurredAt", e.occurred_at)?,
        actor_user_id: entity_id("actorUserId", e.actor_user_id)?,
        kind,
        source,
        flow,
        requested_product,
    })
}

fn activity_kind(kind: i32) -> Result<ActivityKind, WireError> {
    Ok(match known_enum::<pb::ActivityKind>("kind", kind)? {
        pb::ActivityKind::Unspecified => unreachable!("0 is refused by known_enum"),
        pb::ActivityKind::CloudFlowSaved => ActivityKind::CloudFlowSaved,
        pb::ActivityKind::CloudFlowTriggered => ActivityKind::CloudFlowTriggered,
        pb::ActivityKind::CloudFlowTurnedOn => ActivityKind::CloudFlowTurnedOn,
        pb::ActivityKind::LicenseRequested => ActivityKind::LicenseRequested,
        pb::ActivityKind::GoPremiumSelected => ActivityKind::GoPremiumSelected,
        pb::ActivityKind::PremiumTrialRpaUsed => ActivityKind::PremiumTrialRpaUsed,
    })
}

fn flow_info(f: FlowFields<'_>) -> Result<FlowInfo, WireError> {
    let trigger_type = match known_enum::<pb::TriggerType>("flow.triggerType", f.trigger_type)? {
        pb::TriggerType::Unspecified => unreachable!("0 is refused by known_enum"),
        pb::TriggerType::Automated => TriggerType::Automated,
        pb::TriggerType::Scheduled => TriggerType::Scheduled,
        pb::TriggerType::Instant => TriggerType::Instant,
    };
    Ok(FlowInfo {
        flow_id: id("flow.flowId", f.flow_id)?,
        owner_user_id: entity_id("flow.ownerUserId", f.owner_user_id)?,
        trigger_type,
        uses_premium_connectors: f.uses_premium_connectors,
        uses_attended_rpa: f.uses_attended_rpa,
        environment_id: optional_id("flow.environmentId", f.environment_id)?,
        managed_environment: f.managed_environment,
        covered_by_process_plan: f.covered_by_process_plan,
        runs_in_licensed_app_context: f.runs_in_licensed_app_context,
    })
}

impl TryFrom<pb::DirectoryUser> for DirectoryUser {
    type Error = WireError;

    fn try_from(u: pb::DirectoryUser) -> Result<Self, WireError> {
        let guest = match known_enum::<pb::directory_user::UserType>("userType", u.user_type)? {
            pb::directory_user::UserType::Unspecified => unreachable!("0 is refused by known_enum"),
            pb::directory_user::UserType::Member => false,
            pb::directory_user::UserType::Guest => true,
        };
        if u.licenses.len() > MAX_LICENSES {
            return Err(WireError::field(
                "licenses",
                format!(
                    "{} licences, over the limit of {MAX_LICENSES}",
                    u.licenses.len()
                ),
            ));
        }
        let licenses = u
            .licenses
            .into_iter()
            .map(|l| {
                if l.disabled_plan_ids.len() > MAX_PLANS {
                    return Err(WireError::field(
                        "licenses.disabledPlanIds",
                        format!("over the limit of {MAX_PLANS}"),
                    ));
                }
                Ok(DirectoryLicense {
                    sku_id: id("licenses.skuId", l.sku_id)?,
                    disabled_plan_ids: l.disabled_plan_ids,
                })
            })
            .collect::<Result<_, _>>()?;
        let usage_location = optional_id("usageLocation", u.usage_location)?;
        Ok(DirectoryUser {
            tenant_id: entity_id("tenantId", u.tenant_id)?,
            user_id: entity_id("userId", u.user_id)?,
            account_enabled: u.account_enabled,
            guest,
            usage_location: (!usage_location.is_empty()).then_some(usage_location),
            licenses,
            as_of: timestamp("asOf", u.as_of)?,
        })
    }
}

/// A validated inventory record, with the tenant and product it is about.
pub struct InventoryRecord {
    pub tenant_id: String,
    pub product: ProductId,
    pub inventory: Inventory,
}

impl TryFrom<pb::LicenseInventory> for InventoryRecord {
    type Error = WireError;

    fn try_from(i: pb::LicenseInventory) -> Result<Self, WireError> {
        Ok(InventoryRecord {
            tenant_id: entity_id("tenantId", i.tenant_id)?,
            product: product("product", &i.product)?,
            inventory: Inventory {
                purchased_units: i.purchased_units,
                assigned_units: i.assigned_units,
                as_of: timestamp("asOf", i.as_of)?,
            },
        })
    }
}

/// A validated settings version.
pub struct SettingsRecord {
    pub tenant_id: String,
    pub changed_at: Timestamp,
    pub changed_by: String,
    pub settings: TenantSettings,
}

impl TryFrom<pb::TenantSettings> for SettingsRecord {
    type Error = WireError;

    fn try_from(s: pb::TenantSettings) -> Result<Self, WireError> {
        let scope = match pb::Scope::try_from(s.scope) {
            Ok(pb::Scope::Unspecified | pb::Scope::AllEnvironments) => Scope::AllEnvironments,
            Ok(pb::Scope::ManagedEnvironmentsOnly) => Scope::ManagedEnvironmentsOnly,
            Err(_) => {
                return Err(WireError::field(
                    "scope",
                    format!("unknown value {}", s.scope),
                ))
            }
        };
        Ok(SettingsRecord {
            tenant_id: entity_id("tenantId", s.tenant_id)?,
            changed_at: timestamp("changedAt", s.changed_at)?,
            changed_by: optional_id("changedBy", s.changed_by)?,
            settings: TenantSettings {
                autoclaim_enabled: s.autoclaim_enabled,
                scope,
                low_seats_threshold: s.low_seats_threshold,
            },
        })
    }
}

/// A validated policy version, with its tenant.
pub struct PolicyRecord {
    pub tenant_id: String,
    pub policy: Policy,
}

/// Longest policy name, in characters.
pub const MAX_POLICY_NAME_CHARS: usize = 64;

impl TryFrom<pb::Policy> for PolicyRecord {
    type Error = WireError;

    fn try_from(p: pb::Policy) -> Result<Self, WireError> {
        let name = id("name", p.name)?;
        if name.chars().count() > MAX_POLICY_NAME_CHARS {
            return Err(WireError::field(
                "name",
                format!("is over {MAX_POLICY_NAME_CHARS} characters"),
            ));
        }
        let primary = product("product", &p.product)?;
        let backups = p
            .backup_products
            .iter()
            .map(|key| product("backupProducts", key))
            .collect::<Result<Vec<_>, _>>()?;
        let excluded = p
            .excluded_apps
            .into_iter()
            .map(|e| Ok((product("excludedApps.product", &e.product)?, e.plan_ids)))
            .collect::<Result<Vec<_>, WireError>>()?;
        let chain = Policy::build_chain(primary, &backups, &excluded)?;
        Ok(PolicyRecord {
            tenant_id: entity_id("tenantId", p.tenant_id)?,
            policy: Policy {
                policy_id: id("policyId", p.policy_id)?,
                name,
                chain,
                enabled: p.enabled,
                deleted: p.deleted,
                created_at: timestamp("createdAt", p.created_at)?,
                changed_at: timestamp("changedAt", p.changed_at)?,
                changed_by: optional_id("changedBy", p.changed_by)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{contains_control_characters, to_wire_timestamp, Timestamp};
    use crate::wire::timestamp::{is_valid, MAX_SECONDS, MIN_SECONDS};

    #[test]
    fn wire_timestamps_saturate_at_the_range_json_can_write() {
        let wire = |millis| to_wire_timestamp(Timestamp::from_millis(millis));
        assert_eq!((wire(-1).seconds, wire(-1).nanos), (-1, 999_000_000));
        let latest = MAX_SECONDS * 1000 + 999;
        assert_eq!(wire(latest + 1), wire(latest));
        assert_eq!(
            (wire(i64::MAX).seconds, wire(i64::MAX).nanos),
            (MAX_SECONDS, 999_000_000)
        );
        assert_eq!(
            (wire(i64::MIN).seconds, wire(i64::MIN).nanos),
            (MIN_SECONDS, 0)
        );
        for millis in [i64::MIN, -1, 0, latest, latest + 1, i64::MAX] {
            assert!(is_valid(&wire(millis)), "{millis}");
        }
    }

    #[test]
    fn control_characters_are_found_in_ascii_and_other_text() {
        for clean in [
            "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
            "Default-env",
            " ~",
            "José",
            "東京",
            "",
        ] {
            assert!(!contains_control_characters(clean), "{clean:?}");
        }
        for dirty in [
            "a\tb",
            "a\nb",
            "\u{0}",
            "a\u{7f}",
            "José\u{85}",
            "\u{9f}東京",
        ] {
            assert!(contains_control_characters(dirty), "{dirty:?}");
        }
    }
}
