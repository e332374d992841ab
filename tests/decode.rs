//! Decoding input records from both encodings (protobuf and the proto3 JSON mapping) into domain
//! values, and refusing hostile input with a typed error that names what is wrong.
use autoclaim::domain::activity::{Activity, ActivityKind, ActivitySource, FlowInfo, TriggerType};
use autoclaim::domain::catalog::Catalog;
use autoclaim::domain::directory::{DirectoryLicense, DirectoryUser};
use autoclaim::domain::policy::Policy;
use autoclaim::domain::settings::Scope;
use autoclaim::domain::time::Timestamp;
use autoclaim::wire::codec::{self, MAX_RECORD_BYTES};
use autoclaim::wire::convert::{InventoryRecord, PolicyRecord, SettingsRecord};
use autoclaim::wire::{pb, Format, WireError};
use proptest::prelude::*;
use prost::Message;
use serde_json::{json, Value};

/// 2026-03-02T10:31:00Z.
const AT_SECONDS: i64 = 1_772_447_460;
const PREMIUM_SKU: &str = "eda1941c-3c4f-4995-b5eb-e85a42175ab9";
const EXCHANGE: &str = "113feb6c-3fe4-4440-bddc-54d774bf0318";

fn wire_ts(seconds: i64, nanos: i32) -> Option<pbjson_types::Timestamp> {
    Some(pbjson_types::Timestamp { seconds, nanos })
}

fn activity_from_json(text: &str) -> Result<Activity, WireError> {
    let m: pb::ActivityEvent = codec::decode(text.as_bytes(), Format::Json)?;
    Activity::try_from(m)
}

fn activity_from_value(v: &Value) -> Result<Activity, WireError> {
    activity_from_json(&v.to_string())
}

fn activity_from_protobuf(bytes: &[u8]) -> Result<Activity, WireError> {
    let m: pb::ActivityEvent = codec::decode(bytes, Format::Protobuf)?;
    Activity::try_from(m)
}

fn activity_from_message(m: &pb::ActivityEvent) -> Result<Activity, WireError> {
    activity_from_protobuf(&m.encode_to_vec())
}

/// A cloud-flow event in the proto3 JSON mapping, written by hand.
fn flow_event_json() -> Value {
    json!({
        "schemaVersion": 1,
        "eventId": "evt-1",
        "tenantId": "contoso",
        "occurredAt": "2026-03-02T10:31:00.250Z",
        "actorUserId": "alice",
        "kind": "CLOUD_FLOW_TRIGGERED",
        "source": "PORTAL",
        "flow": {
            "flowId": "flow-1",
            "ownerUserId": "owner",
            "triggerType": "SCHEDULED",
            "usesPremiumConnectors": true,
            "usesAttendedRpa": false,
            "environmentId": "env-1",
            "managedEnvironment": true,
            "coveredByProcessPlan": false,
            "runsInLicensedAppContext": true
        }
    })
}

/// The same event as a protobuf message.
fn flow_event_message() -> pb::ActivityEvent {
    pb::ActivityEvent {
        schema_version: 1,
        event_id: "evt-1".into(),
        tenant_id: "contoso".into(),
        occurred_at: wire_ts(AT_SECONDS, 250_000_000),
        actor_user_id: "alice".into(),
        kind: pb::ActivityKind::CloudFlowTriggered as i32,
        source: pb::ActivitySource::Portal as i32,
        flow: Some(pb::Flow {
            flow_id: "flow-1".into(),
            owner_user_id: "owner".into(),
            trigger_type: pb::TriggerType::Scheduled as i32,
            uses_premium_connectors: true,
            uses_attended_rpa: false,
            environment_id: "env-1".into(),
            managed_environment: true,
            covered_by_process_plan: false,
            runs_in_licensed_app_context: true,
        }),
        requested_product: String::new(),
    }
}

fn desktop_event_json() -> Value {
    json!({
        "eventId": "evt-2",
        "tenantId": "contoso",
        "occurredAt": "2026-03-02T10:31:00Z",
        "actorUserId": "heidi",
        "kind": "GO_PREMIUM_SELECTED",
        "source": "DESKTOP"
    })
}

fn request_json() -> Value {
    json!({
        "eventId": "evt-3",
        "tenantId": "contoso",
        "occurredAt": "2026-03-02T10:31:00Z",
        "actorUserId": "judy",
        "kind": "LICENSE_REQUESTED",
        "source": "PORTAL",
        "requestedProduct": "power_automate_per_user"
    })
}

#[track_caller]
fn assert_field_error<T>(result: Result<T, WireError>, expected_field: &str) {
    match result {
        Err(ref e @ WireError::Field { field, .. }) => {
            assert_eq!(field, expected_field, "{e}");
            assert!(e.to_string().contains(expected_field), "{e}");
        }
        Err(e) => panic!("expected a field error on {expected_field}, got {e:?}"),
        Ok(_) => panic!("expected a field error on {expected_field}, got Ok"),
    }
}

#[track_caller]
fn assert_json_error<T>(result: Result<T, WireError>) -> String {
    match result {
        Err(e @ WireError::Json(_)) => {
            assert_eq!(e.code(), "json");
            e.to_string()
        }
        Err(e) => panic!("expected a JSON error, got {e:?}"),
        Ok(_) => panic!("expected a JSON error, got Ok"),
    }
}

#[track_caller]
fn assert_protobuf_error<T>(result: Result<T, WireError>) {
    match result {
        Err(e @ WireError::Protobuf(_)) => assert_eq!(e.code(), "protobuf"),
        Err(e) => panic!("expected a protobuf error, got {e:?}"),
        Ok(_) => panic!("expected a protobuf error, got Ok"),
    }
}

// ------------------------------------------------------------------------- same in both encodings

#[test]
fn the_same_event_in_json_and_protobuf_gives_the_same_domain_value() {
    let from_json = activity_from_value(&flow_event_json()).unwrap();
    let from_pb = activity_from_message(&flow_event_message()).unwrap();
    assert_eq!(from_json, from_pb);
    // And that value is the event, field by field.
    let expected = Activity {
        event_id: "evt-1".into(),
        tenant_id: "contoso".into(),
        occurred_at: Timestamp::from_millis(AT_SECONDS * 1000 + 250),
        actor_user_id: "alice".into(),
        kind: ActivityKind::CloudFlowTriggered,
        source: ActivitySource::Portal,
        flow: Some(FlowInfo {
            flow_id: "flow-1".into(),
            owner_user_id: "owner".into(),
            trigger_type: TriggerType::Scheduled,
            uses_premium_connectors: true,
            uses_attended_rpa: false,
            environment_id: "env-1".into(),
            managed_environment: true,
            covered_by_process_plan: false,
            runs_in_licensed_app_context: true,
        }),
        requested_product: None,
    };
    assert_eq!(from_json, expected);
}

#[test]
fn every_kind_decodes_the_same_from_both_encodings() {
    let cases: Vec<(Value, pb::ActivityEvent)> = vec![
        (desktop_event_json(), {
            pb::ActivityEvent {
                event_id: "evt-2".into(),
                tenant_id: "contoso".into(),
                occurred_at: wire_ts(AT_SECONDS, 0),
                actor_user_id: "heidi".into(),
                kind: pb::ActivityKind::GoPremiumSelected as i32,
                source: pb::ActivitySource::Desktop as i32,
                ..Default::default()
            }
        }),
        (request_json(), {
            pb::ActivityEvent {
                event_id: "evt-3".into(),
                tenant_id: "contoso".into(),
                occurred_at: wire_ts(AT_SECONDS, 0),
                actor_user_id: "judy".into(),
                kind: pb::ActivityKind::LicenseRequested as i32,
                source: pb::ActivitySource::Portal as i32,
                requested_product: "power_automate_per_user".into(),
                ..Default::default()
            }
        }),
    ];
    for (json, message) in cases {
        let a = activity_from_value(&json).unwrap();
        assert_eq!(a, activity_from_message(&message).unwrap());
        assert_eq!(a.occurred_at, Timestamp::from_millis(AT_SECONDS * 1000));
        assert_eq!(a.flow, None);
    }
    let request = activity_from_value(&request_json()).unwrap();
    assert_eq!(request.kind, ActivityKind::LicenseRequested);
    assert_eq!(
        request.requested_product,
        Catalog::by_key("power_automate_per_user")
    );
    let desktop = activity_from_value(&desktop_event_json()).unwrap();
    assert_eq!(
        (desktop.kind, desktop.source),
        (ActivityKind::GoPremiumSelected, ActivitySource::Desktop)
    );
    let mut trial = desktop_event_json();
    trial["kind"] = json!("PREMIUM_TRIAL_RPA_USED");
    assert_eq!(
        activity_from_value(&trial).unwrap().kind,
        ActivityKind::PremiumTrialRpaUsed
    );
    for (name, kind) in [
        ("CLOUD_FLOW_SAVED", ActivityKind::CloudFlowSaved),
        ("CLOUD_FLOW_TURNED_ON", ActivityKind::CloudFlowTurnedOn),
    ] {
        let mut e = flow_event_json();
        e["kind"] = json!(name);
        assert_eq!(activity_from_value(&e).unwrap().kind, kind);
    }
    for (name, trigger) in [
        ("AUTOMATED", TriggerType::Automated),
        ("INSTANT", TriggerType::Instant),
    ] {
        let mut e = flow_event_json();
        e["flow"]["triggerType"] = json!(name);
        let a = activity_from_value(&e).unwrap();
        assert_eq!(a.flow.unwrap().trigger_type, trigger);
    }
}

#[test]
fn table_messages_decode_the_same_from_both_encodings() {
    // Directory user.
    let json = json!({
        "tenantId": "contoso", "userId": "bob", "accountEnabled": true, "userType": "GUEST",
        "usageLocation": "FR", "asOf": "2026-03-02T10:31:00Z",
        "licenses": [{"skuId": PREMIUM_SKU, "disabledPlanIds": [EXCHANGE]}]
    });
    let message = pb::DirectoryUser {
        tenant_id: "contoso".into(),
        user_id: "bob".into(),
        account_enabled: true,
        user_type: pb::directory_user::UserType::Guest as i32,
        usage_location: "FR".into(),
        licenses: vec![pb::AssignedLicense {
            sku_id: PREMIUM_SKU.into(),
            disabled_plan_ids: vec![EXCHANGE.into()],
        }],
        as_of: wire_ts(AT_SECONDS, 0),
    };
    let a: pb::DirectoryUser = codec::decode(json.to_string().as_bytes(), Format::Json).unwrap();
    let b: pb::DirectoryUser = codec::decode(&message.encode_to_vec(), Format::Protobuf).unwrap();
    let (a, b) = (
        DirectoryUser::try_from(a).unwrap(),
        DirectoryUser::try_from(b).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(
        a,
        DirectoryUser {
            tenant_id: "contoso".into(),
            user_id: "bob".into(),
            account_enabled: true,
            guest: true,
            usage_location: Some("FR".into()),
            licenses: vec![DirectoryLicense {
                sku_id: PREMIUM_SKU.into(),
                disabled_plan_ids: vec![EXCHANGE.into()],
            }],
            as_of: Timestamp::from_millis(AT_SECONDS * 1000),
        }
    );

    // Inventory: uint64 as a string in JSON.
    let json = json!({"tenantId": "contoso", "product": "power_automate_premium",
        "purchasedUnits": "18446744073709551615", "assignedUnits": "7", "asOf": "2026-03-02T10:31:00Z"});
    let message = pb::LicenseInventory {
        tenant_id: "contoso".into(),
        product: "power_automate_premium".into(),
        purchased_units: u64::MAX,
        assigned_units: 7,
        as_of: wire_ts(AT_SECONDS, 0),
    };
    let a: pb::LicenseInventory = codec::decode(json.to_string().as_bytes(), Format::Json).unwrap();
    let b: pb::LicenseInventory =
        codec::decode(&message.encode_to_vec(), Format::Protobuf).unwrap();
    let (a, b) = (
        InventoryRecord::try_from(a).unwrap(),
        InventoryRecord::try_from(b).unwrap(),
    );
    for r in [&a, &b] {
        assert_eq!(r.tenant_id, "contoso");
        assert_eq!(
            r.product,
            Catalog::by_key("power_automate_premium").unwrap()
        );
        assert_eq!(r.inventory.purchased_units, u64::MAX);
        assert_eq!(r.inventory.assigned_units, 7);
        assert_eq!(r.inventory.as_of, Timestamp::from_millis(AT_SECONDS * 1000));
    }

    // Settings.
    let json = json!({"tenantId": "contoso", "autoclaimEnabled": true,
        "scope": "MANAGED_ENVIRONMENTS_ONLY", "changedAt": "2026-03-02T10:31:00Z", "changedBy": "admin"});
    let message = pb::TenantSettings {
        tenant_id: "contoso".into(),
        autoclaim_enabled: true,
        scope: pb::Scope::ManagedEnvironmentsOnly as i32,
        changed_at: wire_ts(AT_SECONDS, 0),
        changed_by: "admin".into(),
        low_seats_threshold: 0,
    };
    let a: pb::TenantSettings = codec::decode(json.to_string().as_bytes(), Format::Json).unwrap();
    let b: pb::TenantSettings = codec::decode(&message.encode_to_vec(), Format::Protobuf).unwrap();
    let (a, b) = (
        SettingsRecord::try_from(a).unwrap(),
        SettingsRecord::try_from(b).unwrap(),
    );
    for r in [&a, &b] {
        assert_eq!(r.tenant_id, "contoso");
        assert!(r.settings.autoclaim_enabled);
        assert_eq!(r.settings.scope, Scope::ManagedEnvironmentsOnly);
        assert_eq!(r.changed_at, Timestamp::from_millis(AT_SECONDS * 1000));
        assert_eq!(r.changed_by, "admin");
    }
    // Scope absent means ALL_ENVIRONMENTS.
    let json = json!({"tenantId": "contoso", "autoclaimEnabled": true, "changedAt": "2026-03-02T10:31:00Z"});
    let s: pb::TenantSettings = codec::decode(json.to_string().as_bytes(), Format::Json).unwrap();
    assert_eq!(
        SettingsRecord::try_from(s).unwrap().settings.scope,
        Scope::AllEnvironments
    );

    // Policy.
    let json = json!({"tenantId": "contoso", "policyId": "pol-1", "name": "Flows",
        "product": "power_automate_per_user", "backupProducts": ["power_automate_premium"],
        "excludedApps": [{"product": "power_automate_premium", "planIds": [EXCHANGE]}],
        "enabled": true, "createdAt": "2026-03-02T10:31:00Z", "changedAt": "2026-03-02T10:32:00Z",
        "changedBy": "admin"});
    let message = pb::Policy {
        tenant_id: "contoso".into(),
        policy_id: "pol-1".into(),
        name: "Flows".into(),
        product: "power_automate_per_user".into(),
        backup_products: vec!["power_automate_premium".into()],
        excluded_apps: vec![pb::ExcludedApps {
            product: "power_automate_premium".into(),
            plan_ids: vec![EXCHANGE.into()],
        }],
        enabled: true,
        deleted: false,
        created_at: wire_ts(AT_SECONDS, 0),
        changed_at: wire_ts(AT_SECONDS + 60, 0),
        changed_by: "admin".into(),
    };
    let a: pb::Policy = codec::decode(json.to_string().as_bytes(), Format::Json).unwrap();
    let b: pb::Policy = codec::decode(&message.encode_to_vec(), Format::Protobuf).unwrap();
    let (a, b) = (
        PolicyRecord::try_from(a).unwrap(),
        PolicyRecord::try_from(b).unwrap(),
    );
    assert_eq!(a.tenant_id, "contoso");
    assert_eq!(a.policy, b.policy);
    let p: &Policy = &a.policy;
    assert_eq!(p.policy_id, "pol-1");
    assert_eq!(p.chain.len(), 2);
    assert_eq!(
        p.primary(),
        Catalog::by_key("power_automate_per_user").unwrap()
    );
    assert_eq!(
        p.chain[1].product,
        Catalog::by_key("power_automate_premium").unwrap()
    );
    assert!(p.chain[0].disabled_plans.is_empty());
    assert_eq!(p.chain[1].disabled_plans.len(), 1);
    assert_eq!(p.created_at, Timestamp::from_millis(AT_SECONDS * 1000));
    assert_eq!(
        p.changed_at,
        Timestamp::from_millis((AT_SECONDS + 60) * 1000)
    );
    assert!(p.enabled && !p.deleted);
}

// ------------------------------------------------------------------------ proto3 JSON mapping

#[test]
fn json_accepts_lower_camel_case_and_original_field_names() {
    let snake = json!({
        "schema_version": 1, "event_id": "evt-1", "tenant_id": "contoso",
        "occurred_at": "2026-03-02T10:31:00.250Z", "actor_user_id": "alice",
        "kind": "CLOUD_FLOW_TRIGGERED", "source": "PORTAL",
        "flow": {"flow_id": "flow-1", "owner_user_id": "owner", "trigger_type": "SCHEDULED",
            "uses_premium_connectors": true, "uses_attended_rpa": false,
            "environment_id": "env-1", "managed_environment": true,
            "covered_by_process_plan": false, "runs_in_licensed_app_context": true}
    });
    assert_eq!(
        activity_from_value(&snake).unwrap(),
        activity_from_value(&flow_event_json()).unwrap()
    );
}

#[test]
fn the_licensing_exemptions_of_a_flow_decode_from_both_encodings_and_default_to_none() {
    let exemptions = |a: Activity| {
        let flow = a.flow.expect("a cloud-flow event");
        (
            flow.covered_by_process_plan,
            flow.runs_in_licensed_app_context,
        )
    };
    for (process_plan, app_context) in [(false, false), (true, false), (false, true), (true, true)]
    {
        let mut e = flow_event_json();
        e["flow"]["coveredByProcessPlan"] = json!(process_plan);
        e["flow"]["runsInLicensedAppContext"] = json!(app_context);
        assert_eq!(
            exemptions(activity_from_value(&e).unwrap()),
            (process_plan, app_context)
        );
        let mut m = flow_event_message();
        let flow = m.flow.as_mut().unwrap();
        flow.covered_by_process_plan = process_plan;
        flow.runs_in_licensed_app_context = app_context;
        assert_eq!(
            exemptions(activity_from_message(&m).unwrap()),
            (process_plan, app_context)
        );
    }
    // A producer that does not know the fields sends neither: no exemption.
    let mut e = flow_event_json();
    let flow = e["flow"].as_object_mut().unwrap();
    flow.remove("coveredByProcessPlan");
    flow.remove("runsInLicensedAppContext");
    assert_eq!(exemptions(activity_from_value(&e).unwrap()), (false, false));
    // Protobuf fields 8 and 9 (varints), numbers no earlier field had: the schema only grew.
    let mut m = flow_event_message();
    let flow = m.flow.as_mut().unwrap();
    (
        flow.covered_by_process_plan,
        flow.runs_in_licensed_app_context,
    ) = (true, true);
    let bytes = m.flow.as_ref().unwrap().encode_to_vec();
    assert!(bytes.ends_with(&[8 << 3, 1, 9 << 3, 1]), "{bytes:?}");
}

#[test]
fn json_enums_are_names_and_may_be_numbers() {
    let mut e = flow_event_json();
    e["kind"] = json!(2);
    e["source"] = json!(1);
    e["flow"]["triggerType"] = json!(2);
    assert_eq!(
        activity_from_value(&e).unwrap(),
        activity_from_value(&flow_event_json()).unwrap()
    );
    // Names are case-sensitive.
    let mut e = flow_event_json();
    e["kind"] = json!("cloud_flow_triggered");
    assert_json_error(activity_from_value(&e));
}

#[test]
fn json_timestamps_are_rfc3339_with_any_offset_and_fraction() {
    let base = Timestamp::from_millis(AT_SECONDS * 1000);
    for (text, millis) in [
        ("2026-03-02T10:31:00Z", 0),
        ("2026-03-02T10:31:00.5Z", 500),
        ("2026-03-02T10:31:00.123Z", 123),
        ("2026-03-02T10:31:00.123456Z", 123),
        ("2026-03-02T11:31:00+01:00", 0),
        ("2026-03-02T05:01:00-05:30", 0),
        ("2026-03-02T10:31:00+00:00", 0),
    ] {
        let mut e = desktop_event_json();
        e["occurredAt"] = json!(text);
        let a = activity_from_value(&e).unwrap_or_else(|err| panic!("{text}: {err}"));
        assert_eq!(
            a.occurred_at.as_millis() - base.as_millis(),
            millis,
            "{text}"
        );
    }
    for bad in [
        "2026-03-02",
        "2026-13-02T10:31:00Z",
        "2026-03-02T25:31:00Z",
        "1772447460",
        "",
    ] {
        let mut e = desktop_event_json();
        e["occurredAt"] = json!(bad);
        assert_json_error(activity_from_value(&e));
    }
    // A number is not a timestamp in the JSON mapping.
    let mut e = desktop_event_json();
    e["occurredAt"] = json!(AT_SECONDS);
    assert_json_error(activity_from_value(&e));
}

#[test]
fn json_uint64_may_be_a_string_or_a_number() {
    for (purchased, expected) in [
        (json!("3"), 3u64),
        (json!(3), 3),
        (json!("18446744073709551615"), u64::MAX),
        (json!(18446744073709551615u64), u64::MAX),
        (json!("0"), 0),
    ] {
        let v = json!({"tenantId": "t", "product": "power_automate_per_user",
            "purchasedUnits": purchased, "asOf": "2026-03-02T10:31:00Z"});
        let m: pb::LicenseInventory =
            codec::decode(v.to_string().as_bytes(), Format::Json).unwrap();
        assert_eq!(m.purchased_units, expected, "{v}");
        assert_eq!(m.assigned_units, 0, "absent is zero");
    }
    for bad in [
        json!(-1),
        json!("-1"),
        json!(3.5),
        json!("18446744073709551616"),
        json!(true),
    ] {
        let v = json!({"tenantId": "t", "product": "power_automate_per_user",
            "purchasedUnits": bad, "asOf": "2026-03-02T10:31:00Z"});
        let r: Result<pb::LicenseInventory, _> =
            codec::decode(v.to_string().as_bytes(), Format::Json);
        assert_json_error(r);
    }
    // uint32 schemaVersion too.
    let mut e = desktop_event_json();
    e["schemaVersion"] = json!("1");
    activity_from_value(&e).unwrap();
}

// ------------------------------------------------------------------------------- content type

#[test]
fn content_type_selects_the_encoding() {
    let ok = |v: Option<&str>| Format::from_content_type(v.map(str::as_bytes)).unwrap();
    assert_eq!(ok(None), Format::Json);
    assert_eq!(ok(Some("application/json")), Format::Json);
    assert_eq!(ok(Some("application/json; charset=utf-8")), Format::Json);
    assert_eq!(ok(Some("Application/JSON ;charset=UTF-8")), Format::Json);
    assert_eq!(ok(Some("  application/json  ")), Format::Json);
    assert_eq!(ok(Some("application/x-protobuf")), Format::Protobuf);
    assert_eq!(
        ok(Some("application/x-protobuf; messageType=x")),
        Format::Protobuf
    );
    assert_eq!(ok(Some("application/protobuf")), Format::Protobuf);
    assert_eq!(
        ok(Some("application/vnd.google.protobuf")),
        Format::Protobuf
    );
    for f in [Format::Json, Format::Protobuf] {
        assert_eq!(ok(Some(f.content_type())), f);
    }
    for bad in [
        "text/plain",
        "application/xml",
        "application/jsonx",
        "json",
        "application/avro",
    ] {
        match Format::from_content_type(Some(bad.as_bytes())) {
            Err(e @ WireError::UnsupportedContentType(_)) => {
                assert!(e.to_string().contains(bad), "{e}");
                assert_eq!(e.code(), "content_type");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    // Not UTF-8: refused, not a panic.
    assert!(matches!(
        Format::from_content_type(Some(&[0xff, 0xfe, b'/'])),
        Err(WireError::UnsupportedContentType(_))
    ));
}

// ----------------------------------------------------------------------------- hostile input

#[test]
fn truncated_protobuf_is_refused_without_panicking() {
    let bytes = flow_event_message().encode_to_vec();
    for len in 0..bytes.len() {
        // Every prefix is either a (possibly incomplete) valid message or an error; never a panic.
        let _ = activity_from_protobuf(&bytes[..len]);
    }
    // Cut inside the last length-delimited field (the flow): a protobuf error.
    assert_protobuf_error(activity_from_protobuf(&bytes[..bytes.len() - 1]));
    // Cut inside a varint: a protobuf error.
    assert_protobuf_error(activity_from_protobuf(&[0x08, 0x80]));
    // A length prefix longer than the buffer.
    assert_protobuf_error(activity_from_protobuf(&[0x12, 0x7f, b'a']));
}

#[test]
fn wrong_protobuf_wire_types_are_refused() {
    // Field 2 (eventId, a string) sent as a varint.
    assert_protobuf_error(activity_from_protobuf(&[0x10, 0x01]));
    // Field 1 (schemaVersion, a varint) sent as length-delimited.
    assert_protobuf_error(activity_from_protobuf(&[0x0a, 0x01, b'a']));
    // Invalid UTF-8 in a string field.
    assert_protobuf_error(activity_from_protobuf(&[0x12, 0x02, 0xff, 0xfe]));
}

#[test]
fn deeply_nested_input_is_refused_without_overflowing_the_stack() {
    let deep = "[".repeat(10_000);
    let r: Result<pb::ReplayRecord, _> = codec::decode(deep.as_bytes(), Format::Json);
    assert_json_error(r);
    let deep = format!("{{\"activity\":{{\"flow\":{}", "[".repeat(10_000));
    let r: Result<pb::ReplayRecord, _> = codec::decode(deep.as_bytes(), Format::Json);
    assert_json_error(r);
    let deep = format!(
        "{{\"directoryUser\":{{\"licenses\":{}}}}}",
        "[".repeat(10_000) + &"]".repeat(10_000)
    );
    let r: Result<pb::ReplayRecord, _> = codec::decode(deep.as_bytes(), Format::Json);
    assert_json_error(r);
    let deep = "{\"a\":".repeat(10_000);
    let r: Result<pb::ReplayRecord, _> = codec::decode(deep.as_bytes(), Format::Json);
    assert_json_error(r);
    // Protobuf: 10k nested groups in an unknown field.
    let groups = vec![0x7bu8; 10_000]; // field 15, wire type 3 (start group)
    assert_protobuf_error(activity_from_protobuf(&groups));
    // Protobuf: nested length-delimited flow messages inside the flow field.
    let mut nested: Vec<u8> = Vec::new();
    for _ in 0..200 {
        let mut outer = vec![0x42u8]; // field 8 (flow), length-delimited
        prost::encoding::encode_varint(nested.len() as u64, &mut outer);
        outer.extend_from_slice(&nested);
        nested = outer;
    }
    let _ = activity_from_protobuf(&nested); // must return, Ok or Err
}

#[test]
fn records_over_the_size_limit_are_too_large_before_parsing() {
    let mut e = desktop_event_json();
    e["eventId"] = json!("x".repeat(MAX_RECORD_BYTES));
    let text = e.to_string();
    assert!(text.len() > MAX_RECORD_BYTES);
    match activity_from_json(&text) {
        Err(ref err @ WireError::TooLarge { size, limit }) => {
            assert_eq!(size, text.len());
            assert_eq!(limit, MAX_RECORD_BYTES);
            assert_eq!(err.code(), "too_large");
        }
        other => panic!("{other:?}"),
    }
    // The limit applies before parsing: even garbage of that size is TooLarge, in both formats.
    let garbage = vec![0xffu8; MAX_RECORD_BYTES + 1];
    for format in [Format::Json, Format::Protobuf] {
        let r: Result<pb::ReplayRecord, _> = codec::decode(&garbage, format);
        assert!(matches!(r, Err(WireError::TooLarge { .. })), "{format:?}");
    }
    // A record of exactly the limit is parsed.
    let m = pb::ActivityEvent {
        event_id: "e".repeat(MAX_RECORD_BYTES - 4), // tag (1) + length varint (3) + bytes
        ..Default::default()
    };
    let bytes = m.encode_to_vec();
    assert_eq!(bytes.len(), MAX_RECORD_BYTES);
    let decoded: pb::ActivityEvent = codec::decode(&bytes, Format::Protobuf).unwrap();
    assert_eq!(decoded, m);
}

#[test]
fn identifiers_over_256_bytes_are_field_errors() {
    let long = "a".repeat(257);
    let just = "a".repeat(256);
    for (path, field) in [
        (&["eventId"][..], "eventId"),
        (&["tenantId"][..], "tenantId"),
        (&["actorUserId"][..], "actorUserId"),
        (&["flow", "flowId"][..], "flow.flowId"),
        (&["flow", "ownerUserId"][..], "flow.ownerUserId"),
        (&["flow", "environmentId"][..], "flow.environmentId"),
    ] {
        let mut e = flow_event_json();
        let slot = path.iter().fold(&mut e, |v, k| &mut v[*k]);
        *slot = json!(just);
        activity_from_value(&e).unwrap_or_else(|err| panic!("{field} of 256 bytes: {err}"));
        let mut e = flow_event_json();
        let slot = path.iter().fold(&mut e, |v, k| &mut v[*k]);
        *slot = json!(long);
        assert_field_error(activity_from_value(&e), field);
    }
    // Bytes, not characters: 129 two-byte characters are 258 bytes.
    let mut e = flow_event_json();
    e["tenantId"] = json!("é".repeat(129));
    assert_field_error(activity_from_value(&e), "tenantId");
    // Control characters are refused too.
    let mut e = flow_event_json();
    e["actorUserId"] = json!("ali\nce");
    assert_field_error(activity_from_value(&e), "actorUserId");
    // Table records as well.
    let v = json!({"tenantId": "t", "userId": long, "accountEnabled": true, "userType": "MEMBER",
        "asOf": "2026-03-02T10:31:00Z"});
    let m: pb::DirectoryUser = codec::decode(v.to_string().as_bytes(), Format::Json).unwrap();
    assert_field_error(DirectoryUser::try_from(m), "userId");
}

#[test]
fn unknown_enum_values_are_refused() {
    // JSON: a name the schema does not have.
    let mut e = flow_event_json();
    e["kind"] = json!("CLOUD_FLOW_DELETED");
    let msg = assert_json_error(activity_from_value(&e));
    assert!(msg.contains("CLOUD_FLOW_DELETED"), "{msg}");
    // JSON: a number the schema does not have is a value of the open proto3 enum (the mapping reads
    // it, as protobuf does), then refused by field; a number outside int32 is not an enum value.
    let mut e = flow_event_json();
    e["kind"] = json!(99);
    assert_field_error(activity_from_value(&e), "kind");
    let mut e = flow_event_json();
    e["flow"]["triggerType"] = json!(-1);
    assert_field_error(activity_from_value(&e), "flow.triggerType");
    let mut e = flow_event_json();
    e["kind"] = json!(2_147_483_648u64);
    assert_json_error(activity_from_value(&e));
    // Protobuf: integers the schema does not have are read, then refused by field.
    let mut m = flow_event_message();
    m.kind = 99;
    assert_field_error(activity_from_message(&m), "kind");
    let mut m = flow_event_message();
    m.source = 3;
    assert_field_error(activity_from_message(&m), "source");
    let mut m = flow_event_message();
    m.flow.as_mut().unwrap().trigger_type = -1;
    assert_field_error(activity_from_message(&m), "flow.triggerType");
    let user = pb::DirectoryUser {
        tenant_id: "t".into(),
        user_id: "u".into(),
        user_type: 7,
        as_of: wire_ts(AT_SECONDS, 0),
        ..Default::default()
    };
    let m: pb::DirectoryUser = codec::decode(&user.encode_to_vec(), Format::Protobuf).unwrap();
    assert_field_error(DirectoryUser::try_from(m), "userType");
    let s = pb::TenantSettings {
        tenant_id: "t".into(),
        scope: 9,
        changed_at: wire_ts(AT_SECONDS, 0),
        ..Default::default()
    };
    let m: pb::TenantSettings = codec::decode(&s.encode_to_vec(), Format::Protobuf).unwrap();
    assert_field_error(SettingsRecord::try_from(m), "scope");
}

#[test]
fn unspecified_enums_are_missing_fields() {
    let mut m = flow_event_message();
    m.kind = 0;
    assert_field_error(activity_from_message(&m), "kind");
    let mut m = flow_event_message();
    m.source = 0;
    assert_field_error(activity_from_message(&m), "source");
    let mut m = flow_event_message();
    m.flow.as_mut().unwrap().trigger_type = 0;
    assert_field_error(activity_from_message(&m), "flow.triggerType");
    let mut e = flow_event_json();
    e["kind"] = json!("ACTIVITY_KIND_UNSPECIFIED");
    assert_field_error(activity_from_value(&e), "kind");
}

#[test]
fn unknown_json_fields_are_refused_and_named() {
    let mut e = flow_event_json();
    e["surprise"] = json!(1);
    let msg = assert_json_error(activity_from_value(&e));
    assert!(msg.contains("surprise"), "{msg}");
    let mut e = flow_event_json();
    e["flow"]["colour"] = json!("blue");
    let msg = assert_json_error(activity_from_value(&e));
    assert!(msg.contains("colour"), "{msg}");
    // Unknown protobuf fields are skipped (forward compatibility of the binary encoding).
    let mut bytes = flow_event_message().encode_to_vec();
    bytes.extend_from_slice(&[0xf8, 0x01, 0x05]); // field 31, varint 5
    assert_eq!(
        activity_from_protobuf(&bytes).unwrap(),
        activity_from_message(&flow_event_message()).unwrap()
    );
}

#[test]
fn a_future_schema_version_is_refused_as_such() {
    for version in [0u32, 1] {
        let mut m = flow_event_message();
        m.schema_version = version;
        activity_from_message(&m).unwrap();
        let mut e = flow_event_json();
        e["schemaVersion"] = json!(version);
        activity_from_value(&e).unwrap();
    }
    let mut m = flow_event_message();
    m.schema_version = 2;
    let r = activity_from_message(&m);
    assert!(
        matches!(r, Err(WireError::UnknownSchemaVersion(2))),
        "{r:?}"
    );
    assert_eq!(r.unwrap_err().code(), "schema_version");
    let mut e = flow_event_json();
    e["schemaVersion"] = json!(2);
    let r = activity_from_value(&e);
    assert!(
        matches!(r, Err(WireError::UnknownSchemaVersion(2))),
        "{r:?}"
    );
    let mut e = flow_event_json();
    e["schemaVersion"] = json!(u32::MAX);
    let r = activity_from_value(&e);
    assert!(
        matches!(r, Err(WireError::UnknownSchemaVersion(u32::MAX))),
        "{r:?}"
    );
}

#[test]
fn a_future_schema_version_with_new_fields_is_refused_as_such_in_both_encodings() {
    // A version-2 producer adds a field. Protobuf skips the unknown field and reports the version;
    // the JSON encoding of the same message must say the same thing ("one schema, two encodings"),
    // not that the new field is unknown.
    let mut bytes = {
        let mut m = flow_event_message();
        m.schema_version = 2;
        m.encode_to_vec()
    };
    bytes.extend_from_slice(&[0x52, 0x03, b'n', b'e', b'w']); // field 10, "new"
    let r = activity_from_protobuf(&bytes);
    assert!(
        matches!(r, Err(WireError::UnknownSchemaVersion(2))),
        "{r:?}"
    );
    let mut e = flow_event_json();
    e["schemaVersion"] = json!(2);
    e["costCentre"] = json!("new");
    let r = activity_from_value(&e);
    assert!(
        matches!(r, Err(WireError::UnknownSchemaVersion(2))),
        "JSON gave {r:?}"
    );
}

#[test]
fn missing_required_fields_are_named() {
    for (key, field) in [
        ("eventId", "eventId"),
        ("tenantId", "tenantId"),
        ("occurredAt", "occurredAt"),
        ("actorUserId", "actorUserId"),
        ("kind", "kind"),
        ("source", "source"),
    ] {
        let mut e = flow_event_json();
        e.as_object_mut().unwrap().remove(key);
        assert_field_error(activity_from_value(&e), field);
        // Empty strings are missing too (proto3 has no presence for strings).
        if key.ends_with("Id") {
            let mut e = flow_event_json();
            e[key] = json!("");
            assert_field_error(activity_from_value(&e), field);
        }
    }
    for (key, field) in [
        ("flowId", "flow.flowId"),
        ("ownerUserId", "flow.ownerUserId"),
        ("triggerType", "flow.triggerType"),
    ] {
        let mut e = flow_event_json();
        e["flow"].as_object_mut().unwrap().remove(key);
        assert_field_error(activity_from_value(&e), field);
    }
    // The same in protobuf.
    let mut m = flow_event_message();
    m.tenant_id.clear();
    assert_field_error(activity_from_message(&m), "tenantId");
    let mut m = flow_event_message();
    m.occurred_at = None;
    assert_field_error(activity_from_message(&m), "occurredAt");
    let mut m = flow_event_message();
    m.event_id.clear();
    assert_field_error(activity_from_message(&m), "eventId");
    // environmentId is optional.
    let mut e = flow_event_json();
    e["flow"].as_object_mut().unwrap().remove("environmentId");
    activity_from_value(&e).unwrap();
}

#[test]
fn timestamps_outside_1970_to_9999_are_field_errors() {
    let mut m = flow_event_message();
    m.occurred_at = wire_ts(-1, 0);
    assert_field_error(activity_from_message(&m), "occurredAt");
    let mut m = flow_event_message();
    m.occurred_at = wire_ts(253_402_300_800, 0); // year 10000
    assert_field_error(activity_from_message(&m), "occurredAt");
    let mut m = flow_event_message();
    m.occurred_at = wire_ts(AT_SECONDS, -1);
    assert_field_error(activity_from_message(&m), "occurredAt");
    let mut m = flow_event_message();
    m.occurred_at = wire_ts(AT_SECONDS, 1_000_000_000);
    assert_field_error(activity_from_message(&m), "occurredAt");
    let mut m = flow_event_message();
    m.occurred_at = wire_ts(i64::MAX, 0);
    assert_field_error(activity_from_message(&m), "occurredAt");
    let mut e = flow_event_json();
    e["occurredAt"] = json!("1969-12-31T23:59:59Z");
    assert_field_error(activity_from_value(&e), "occurredAt");
    // The edges themselves are accepted.
    let mut m = flow_event_message();
    m.occurred_at = wire_ts(0, 0);
    assert_eq!(
        activity_from_message(&m).unwrap().occurred_at,
        Timestamp::from_millis(0)
    );
    m.occurred_at = wire_ts(253_402_300_799, 999_999_999);
    assert_eq!(
        activity_from_message(&m).unwrap().occurred_at,
        Timestamp::from_millis(253_402_300_799_999)
    );
}

#[test]
fn a_cloud_flow_event_needs_a_flow() {
    for kind in [
        "CLOUD_FLOW_SAVED",
        "CLOUD_FLOW_TRIGGERED",
        "CLOUD_FLOW_TURNED_ON",
    ] {
        let mut e = flow_event_json();
        e["kind"] = json!(kind);
        e.as_object_mut().unwrap().remove("flow");
        assert_field_error(activity_from_value(&e), "flow");
    }
    let mut m = flow_event_message();
    m.flow = None;
    assert_field_error(activity_from_message(&m), "flow");
    // Other kinds ignore a flow sent anyway.
    let mut e = desktop_event_json();
    e["flow"] = flow_event_json()["flow"].clone();
    assert_eq!(activity_from_value(&e).unwrap().flow, None);
}

#[test]
fn a_licence_request_needs_a_catalog_product() {
    let mut e = request_json();
    e.as_object_mut().unwrap().remove("requestedProduct");
    assert_field_error(activity_from_value(&e), "requestedProduct");
    let mut e = request_json();
    e["requestedProduct"] = json!("office_e5");
    let r = activity_from_value(&e);
    let msg = format!("{:?}", r.as_ref().err());
    assert_field_error(r, "requestedProduct");
    assert!(msg.contains("office_e5"), "{msg}");
    // Keys are exact.
    let mut e = request_json();
    e["requestedProduct"] = json!("POWER_AUTOMATE_PER_USER");
    assert_field_error(activity_from_value(&e), "requestedProduct");
    let mut e = request_json();
    e["requestedProduct"] = json!("power_automate_premium");
    assert_eq!(
        activity_from_value(&e).unwrap().requested_product,
        Catalog::by_key("power_automate_premium")
    );
}

#[test]
fn each_kind_must_come_from_its_source() {
    let mut e = desktop_event_json();
    e["source"] = json!("PORTAL");
    assert_field_error(activity_from_value(&e), "source");
    let mut e = desktop_event_json();
    e["kind"] = json!("PREMIUM_TRIAL_RPA_USED");
    e["source"] = json!("PORTAL");
    assert_field_error(activity_from_value(&e), "source");
    let mut e = flow_event_json();
    e["source"] = json!("DESKTOP");
    assert_field_error(activity_from_value(&e), "source");
    let mut e = request_json();
    e["source"] = json!("DESKTOP");
    assert_field_error(activity_from_value(&e), "source");
}

#[test]
fn wrong_json_types_are_json_errors() {
    let cases: Vec<(&str, Value)> = vec![
        ("eventId", json!(5)),
        ("tenantId", json!(["contoso"])),
        ("occurredAt", json!({"seconds": 1})),
        ("kind", json!(true)),
        ("flow", json!([])),
        ("flow", json!("flow-1")),
        ("schemaVersion", json!(-1)),
        ("schemaVersion", json!(4_294_967_296u64)),
    ];
    for (key, value) in cases {
        let mut e = flow_event_json();
        e[key] = value.clone();
        assert_json_error(activity_from_value(&e));
    }
    let mut e = flow_event_json();
    e["flow"]["usesPremiumConnectors"] = json!("yes");
    assert_json_error(activity_from_value(&e));
    // Not an object at all.
    for text in [
        "null",
        "42",
        "\"event\"",
        "",
        "{",
        "{}}",
        "{\"eventId\":\"a\",}",
    ] {
        let r: Result<pb::ActivityEvent, _> = codec::decode(text.as_bytes(), Format::Json);
        assert_json_error(r);
    }
}

#[test]
fn json_errors_name_the_field_at_fault() {
    // Design 2.5 step 1: dead-letter "with the reason", and wire/error.rs: "every variant names what
    // is wrong so that a dead letter ... tells its producer what to fix". A JSON error must say
    // which field, not only a line and column.
    let cases: Vec<(Vec<&str>, Value)> = vec![
        (vec!["eventId"], json!(5)),
        (vec!["kind"], json!("CLOUD_FLOW_DELETED")),
        (vec!["kind"], json!(2_147_483_648u64)),
        (vec!["occurredAt"], json!("yesterday")),
        (vec!["flow", "usesPremiumConnectors"], json!("yes")),
    ];
    let mut unnamed = Vec::new();
    for (path, value) in cases {
        let mut e = flow_event_json();
        let slot = path.iter().fold(&mut e, |v, k| &mut v[*k]);
        *slot = value;
        let msg = assert_json_error(activity_from_value(&e));
        let field = path.last().unwrap();
        if !msg.contains(field) {
            unnamed.push(format!("{}: {msg}", path.join(".")));
        }
    }
    assert!(
        unnamed.is_empty(),
        "JSON errors that do not name their field:\n{}",
        unnamed.join("\n")
    );
}

#[test]
fn table_record_errors_are_named() {
    // Inventory of a product outside the catalog.
    let v = json!({"tenantId": "t", "product": "office_e5", "asOf": "2026-03-02T10:31:00Z"});
    let m: pb::LicenseInventory = codec::decode(v.to_string().as_bytes(), Format::Json).unwrap();
    assert_field_error(InventoryRecord::try_from(m), "product");
    let v = json!({"tenantId": "t", "product": "power_automate_premium"});
    let m: pb::LicenseInventory = codec::decode(v.to_string().as_bytes(), Format::Json).unwrap();
    assert_field_error(InventoryRecord::try_from(m), "asOf");
    // Directory user without a user type.
    let v = json!({"tenantId": "t", "userId": "u", "accountEnabled": true, "asOf": "2026-03-02T10:31:00Z"});
    let m: pb::DirectoryUser = codec::decode(v.to_string().as_bytes(), Format::Json).unwrap();
    assert_field_error(DirectoryUser::try_from(m), "userType");
    // Settings without a tenant.
    let v = json!({"autoclaimEnabled": true, "changedAt": "2026-03-02T10:31:00Z"});
    let m: pb::TenantSettings = codec::decode(v.to_string().as_bytes(), Format::Json).unwrap();
    assert_field_error(SettingsRecord::try_from(m), "tenantId");
    // Policies: chain rules are policy errors.
    let policy = |extra: Value| {
        let mut v = json!({"tenantId": "t", "policyId": "p", "name": "P",
            "product": "power_automate_per_user", "enabled": true,
            "createdAt": "2026-03-02T10:31:00Z", "changedAt": "2026-03-02T10:31:00Z"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        let m: pb::Policy = codec::decode(v.to_string().as_bytes(), Format::Json).unwrap();
        PolicyRecord::try_from(m)
    };
    assert!(policy(json!({})).is_ok());
    assert!(matches!(
        policy(json!({"backupProducts": ["power_automate_premium", "power_automate_per_user"]})),
        Err(WireError::Policy(_))
    ));
    assert!(matches!(
        policy(
            json!({"excludedApps": [{"product": "power_automate_per_user",
            "planIds": ["c5002c70-f725-4367-b409-f0eff4fee6c0"]}]})
        ),
        Err(WireError::Policy(_))
    ));
    assert_field_error(
        policy(json!({"backupProducts": ["office_e5"]})),
        "backupProducts",
    );
    assert_field_error(policy(json!({"name": ""})), "name");
    assert_field_error(policy(json!({"name": "n".repeat(65)})), "name");
    assert_field_error(policy(json!({"product": ""})), "product");
    assert_field_error(policy(json!({"policyId": ""})), "policyId");
}

// ------------------------------------------------------------------------------- properties

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9-]{0,12}",
        1 => ".{0,8}",
        1 => Just("a".repeat(257)),
        1 => Just("power_automate_premium".to_string()),
    ]
}

prop_compose! {
    fn arb_flow()(
        flow_id in arb_string(), owner in arb_string(), trigger in 0i32..=3,
        premium in any::<bool>(), rpa in any::<bool>(), env in arb_string(), managed in any::<bool>(),
        process_plan in any::<bool>(), app_context in any::<bool>(),
    ) -> pb::Flow {
        pb::Flow {
            flow_id, owner_user_id: owner, trigger_type: trigger, uses_premium_connectors: premium,
            uses_attended_rpa: rpa, environment_id: env, managed_environment: managed,
            covered_by_process_plan: process_plan, runs_in_licensed_app_context: app_context,
        }
    }
}

prop_compose! {
    fn arb_event()(
        version in 0u32..=3, event_id in arb_string(), tenant_id in arb_string(),
        seconds in prop_oneof![Just(None), (-10i64..300_000_000_000).prop_map(Some)],
        nanos in 0i32..1_000_000_000, actor in arb_string(), kind in 0i32..=6, source in 0i32..=2,
        flow in proptest::option::of(arb_flow()), product in arb_string(),
    ) -> pb::ActivityEvent {
        pb::ActivityEvent {
            schema_version: version, event_id, tenant_id,
            // Seconds JSON can carry (RFC 3339 years 0..9999), so both encodings can express it.
            occurred_at: seconds
                .filter(|s| (-62_135_596_800..=253_402_300_799).contains(s))
                .map(|seconds| pbjson_types::Timestamp { seconds, nanos }),
            actor_user_id: actor, kind, source, flow, requested_product: product,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_events_decode_the_same_from_both_encodings(m in arb_event()) {
        let json = serde_json::to_string(&m).expect("valid enums and timestamps serialize");
        let from_json = activity_from_json(&json);
        let from_pb = activity_from_message(&m);
        match (&from_json, &from_pb) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            _ => prop_assert!(false, "json {:?} vs protobuf {:?}", from_json, from_pb),
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for format in [Format::Json, Format::Protobuf] {
            if let Ok(m) = codec::decode::<pb::ActivityEvent>(&bytes, format) {
                let _ = Activity::try_from(m);
            }
            if let Ok(m) = codec::decode::<pb::DirectoryUser>(&bytes, format) {
                let _ = DirectoryUser::try_from(m);
            }
            if let Ok(m) = codec::decode::<pb::Policy>(&bytes, format) {
                let _ = PolicyRecord::try_from(m);
            }
            if let Ok(m) = codec::decode::<pb::LicenseInventory>(&bytes, format) {
                let _ = InventoryRecord::try_from(m);
            }
            if let Ok(m) = codec::decode::<pb::TenantSettings>(&bytes, format) {
                let _ = SettingsRecord::try_from(m);
            }
            let _ = codec::decode::<pb::ReplayRecord>(&bytes, format);
        }
    }

    #[test]
    fn mutated_valid_records_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let valid = flow_event_message().encode_to_vec();
        let mut bytes = valid.clone();
        for (i, b) in &flips {
            bytes[i.index(valid.len())] = *b;
        }
        bytes.truncate(cut.index(valid.len() + 1));
        let _ = activity_from_protobuf(&bytes);
        let mut text = flow_event_json().to_string().into_bytes();
        let len = text.len();
        for (i, b) in &flips {
            text[i.index(len)] = *b;
        }
        text.truncate(cut.index(len + 1));
        let _ = codec::decode::<pb::ActivityEvent>(&text, Format::Json).map(Activity::try_from);
    }
}
