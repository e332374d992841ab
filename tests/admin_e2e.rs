//! The admin API end to end against a real Kafka broker: autoclaim turned on and a policy created
//! through the HTTP API of `autoclaim run` with a development token from `autoclaim token`; the
//! policy assigns only once its propagation delay has passed (judged by the events' time), and the
//! report (over HTTP, and from `autoclaim report`) then shows the assignment.
//! Needs AUTOCLAIM_TEST_BROKERS (see `scripts/kafka`).
mod admin_support;
mod kafka_support;

use std::time::Duration;

use admin_support::*;
use autoclaim::domain::time::Timestamp;
use autoclaim::wire::convert::{timestamp, to_wire_timestamp};
use autoclaim::wire::{pb, Format};
use kafka_support::*;
use serde_json::{json, Value};

const TENANT: &str = "tenant-e2e";
const PER_USER: &str = "power_automate_per_user";
const DELAY_MS: i64 = 3_000;
const WAIT: Duration = Duration::from_secs(120);

fn call(port: u16, method: &str, path: &str, token: &str, body: Option<&Value>) -> Reply {
    http(port, method, path, token, body)
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP response"))
}

fn millis(value: &Value) -> i64 {
    let wire: pbjson_types::Timestamp = serde_json::from_value(value.clone()).unwrap();
    timestamp("t", Some(wire)).unwrap().as_millis()
}

fn ts(millis: i64) -> Option<pbjson_types::Timestamp> {
    Some(to_wire_timestamp(Timestamp::from_millis(millis)))
}

fn record(r: pb::replay_record::Record) -> pb::ReplayRecord {
    pb::ReplayRecord {
        record: Some(r),
        written_at: None,
    }
}

fn licence_request(id: &str, user: &str, at: i64) -> pb::ActivityEvent {
    pb::ActivityEvent {
        schema_version: 1,
        event_id: id.into(),
        tenant_id: TENANT.into(),
        occurred_at: ts(at),
        actor_user_id: user.into(),
        kind: pb::ActivityKind::LicenseRequested as i32,
        source: pb::ActivitySource::Portal as i32,
        requested_product: PER_USER.into(),
        ..Default::default()
    }
}

fn sleep_until(millis: i64) {
    let now = Timestamp::now().as_millis();
    if millis > now {
        std::thread::sleep(Duration::from_millis((millis - now) as u64));
    }
}

#[test]
fn a_policy_created_through_the_api_assigns_after_its_delay_and_shows_in_the_report() {
    let topics = unique_topics("admin");
    create_topics(&topics, 1);
    let mut service = AdminService::start(&topics, "admin-e2e", "3s", &[]);
    let port = service.port;

    // A development token from the CLI, for the tenant's Global Administrator.
    let token = token(TENANT, "admin-oid-1");
    let settings = format!("/v1/tenants/{TENANT}/settings");
    let policies = format!("/v1/tenants/{TENANT}/policies");

    // The API answers once its view of the topics is loaded; without a token it refuses.
    wait_until("the admin API", WAIT, || {
        http(port, "GET", &settings, &token, None).is_some_and(|r| r.status == 200)
    });
    let refused = call(port, "GET", &settings, "not-a-token", None);
    assert_eq!(refused.status, 401);
    assert!(refused
        .head
        .to_ascii_lowercase()
        .contains("content-type: application/problem+json"));
    // The service's own endpoints are still there beside the admin API.
    assert_eq!(call(port, "GET", "/healthz", "", None).status, 200);

    // Directory and inventory: three eligible users, ten licences of which none assigned yet.
    let mut tables = vec![record(pb::replay_record::Record::Inventory(
        pb::LicenseInventory {
            tenant_id: TENANT.into(),
            product: PER_USER.into(),
            purchased_units: 10,
            assigned_units: 0,
            as_of: ts(Timestamp::now().as_millis() - 3_600_000),
        },
    ))];
    for user in ["early", "straggler", "late"] {
        tables.push(record(pb::replay_record::Record::DirectoryUser(
            pb::DirectoryUser {
                tenant_id: TENANT.into(),
                user_id: user.into(),
                account_enabled: true,
                user_type: pb::directory_user::UserType::Member as i32,
                usage_location: "US".into(),
                as_of: ts(Timestamp::now().as_millis() - 3_600_000),
                ..Default::default()
            },
        )));
    }
    publish(&topics, &tables, Format::Json);

    // Turn autoclaim on, and let that propagate before the policy is created, so that the only
    // thing the delay of the policy decides is the policy.
    let reply = call(
        port,
        "PUT",
        &settings,
        &token,
        Some(&json!({"autoclaimEnabled": true})),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let on = reply.json();
    assert_eq!(on["status"], "PROPAGATING");
    assert_eq!(on["settings"]["changedBy"], "admin-oid-1");
    let settings_changed = millis(&on["settings"]["changedAt"]);
    assert_eq!(millis(&on["effectiveAt"]), settings_changed + DELAY_MS);
    sleep_until(settings_changed + DELAY_MS + 100);
    assert_eq!(
        call(port, "GET", &settings, &token, None).json()["status"],
        "ACTIVE"
    );

    // Create the policy: it is PROPAGATING until changedAt + 3 s.
    let reply = call(
        port,
        "POST",
        &policies,
        &token,
        Some(&json!({"name": "Flows for everyone", "product": PER_USER, "enabled": true})),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let created = reply.json();
    let policy_id = created["policy"]["policyId"].as_str().unwrap().to_owned();
    let changed = millis(&created["policy"]["changedAt"]);
    assert_eq!(created["status"], "PROPAGATING");
    assert_eq!(millis(&created["propagatingUntil"]), changed + DELAY_MS);
    assert_eq!(millis(&created["effectiveAt"]), changed + DELAY_MS);
    assert_eq!(created["policy"]["changedBy"], "admin-oid-1");
    // Read your writes: listed at once.
    let list = call(port, "GET", &policies, &token, None).json();
    assert_eq!(
        list["policies"][0]["policy"]["policyId"],
        policy_id.as_str()
    );
    assert_eq!(list["policies"][0]["status"], "PROPAGATING");
    assert_eq!(
        list["policies"][0]["availableLicenses"], 10,
        "the inventory was published seconds ago: {list}"
    );

    // A request made inside the delay gets nothing, even when it reaches the processor after the
    // delay (decisions go by the event's time); a request after the delay gets a licence.
    let early = Timestamp::now().as_millis();
    assert!(
        early < changed + DELAY_MS,
        "the test was too slow to act inside the delay"
    );
    publish(
        &topics,
        &activity_records([licence_request("inside-delay", "early", early)]),
        Format::Json,
    );
    sleep_until(changed + DELAY_MS + 100);
    let policy_path = format!("{policies}/{policy_id}");
    assert_eq!(
        call(port, "GET", &policy_path, &token, None).json()["status"],
        "ACTIVE"
    );
    let now = Timestamp::now().as_millis();
    publish(
        &topics,
        &activity_records([
            licence_request("straggler", "straggler", changed + DELAY_MS - 1),
            licence_request("after-delay", "late", now),
        ]),
        Format::Json,
    );
    wait_until("the assignment", WAIT, || {
        !read_committed(&topics.assignments).is_empty()
    });
    // All three events are in one partition, in order: the first two were decided before the third.
    std::thread::sleep(Duration::from_secs(1));
    let got = assignments(&topics);
    assert_eq!(
        got.len(),
        1,
        "only the request after the delay is assigned: {got:?}"
    );
    assert_eq!(got[0].user_id, "late");
    assert_eq!(got[0].policy_id, policy_id);
    assert_eq!(got[0].trigger_event_id, "after-delay");

    // The report shows it, over HTTP (JSON and CSV), and the licences available went down.
    let report_path = format!("/v1/tenants/{TENANT}/report?days=1");
    wait_until("the report to show the assignment", WAIT, || {
        call(port, "GET", &report_path, &token, None).json()["total"] == 1
    });
    let report = call(port, "GET", &report_path, &token, None).json();
    let policy = &report["policies"][0];
    assert_eq!(policy["policyId"], policy_id.as_str());
    assert_eq!(policy["policyName"], "Flows for everyone");
    assert_eq!(policy["count"], 1);
    assert_eq!(policy["rows"][0]["userId"], "late");
    assert_eq!(policy["rows"][0]["product"], PER_USER);
    assert_eq!(policy["rows"][0]["trigger"], "LICENSE_REQUESTED");
    let csv = call(
        port,
        "GET",
        &format!("{report_path}&format=csv"),
        &token,
        None,
    );
    assert_eq!(csv.status, 200);
    assert_eq!(csv.body.lines().count(), 2, "{}", csv.body);
    assert!(csv
        .body
        .lines()
        .nth(1)
        .unwrap()
        .starts_with(&format!("{policy_id},Flows for everyone,late,{PER_USER},")));
    let seats = call(port, "GET", &policy_path, &token, None).json();
    assert_eq!(seats["availableLicenses"], 9);

    // And from the command line, straight from the assignments topic.
    let out = bin()
        .args(["report", "--brokers", &brokers()])
        .args(["--assignments-topic", &topics.assignments])
        .args(["--tenant", TENANT, "--days", "1", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["total"], 1);
    assert_eq!(cli["policies"][0]["policyId"], policy_id.as_str());
    assert_eq!(cli["policies"][0]["rows"][0]["userId"], "late");

    // What the API wrote is what the processor read: the settings and policy versions, keyed by entity.
    let written: Vec<String> = read_committed(&topics.policies)
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(
        written,
        [
            format!("{TENANT}/settings"),
            format!("{TENANT}/policy/{policy_id}")
        ]
    );

    let status = service.stop();
    assert!(status.success(), "clean exit; log:\n{}", service.log_text());
}
