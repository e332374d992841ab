//! Pending claims through the admin API against a real Kafka broker: a tenant with no seat, three
//! users refused in turn, then a snapshot with two seats; the HTTP API of `autoclaim run` shows
//! the two oldest claims fulfilled (with since when they waited) and the third still pending, a
//! user's history lists the failure, the claim and the assignment, and the report (over HTTP and
//! from `autoclaim report`) counts the failures and the claim still waiting.
//! Needs AUTOCLAIM_TEST_BROKERS (see `scripts/kafka`).
mod admin_support;
mod kafka_support;
mod support;

use std::time::Duration;

use admin_support::{bin, http, token, AdminService, Reply};
use autoclaim::domain::time::Timestamp;
use autoclaim::wire::Format;
use kafka_support::{brokers, create_topics, publish, unique_topics, wait_until};
use serde_json::Value;
use support::{autoclaim_on, inventory, Ev, PolicySpec, UserSpec, PER_USER};

const TENANT: &str = "tenant-claims-e2e";
const WAIT: Duration = Duration::from_secs(120);

fn get(port: u16, path: &str, token: &str) -> Reply {
    let reply = http(port, "GET", path, token, None)
        .unwrap_or_else(|| panic!("GET {path}: no HTTP response"));
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
    reply
}

fn millis(value: &Value) -> i64 {
    let wire: pbjson_types::Timestamp = serde_json::from_value(value.clone()).unwrap();
    wire.seconds * 1000 + i64::from(wire.nanos / 1_000_000)
}

fn rows_with(port: u16, token: &str, query: &str) -> Vec<Value> {
    let path = format!("/v1/tenants/{TENANT}/claims{query}");
    get(port, &path, token).json()["rows"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_snapshot_with_two_seats_fulfils_the_two_oldest_claims_as_the_api_shows() {
    let topics = unique_topics("claims-api");
    create_topics(&topics, 1);
    let now = Timestamp::now().as_millis();
    // Autoclaim on and a per-user policy, in force long before the events; no seat at all.
    let mut tables = vec![
        autoclaim_on(TENANT, now - 7_200_000),
        PolicySpec::new(TENANT, "pol", PER_USER, now - 7_200_000).record(),
        inventory(TENANT, PER_USER, 0, 0, now - 3_600_000),
    ];
    for user in ["u1", "u2", "u3"] {
        tables.push(UserSpec::member(TENANT, user).record());
    }
    publish(&topics, &tables, Format::Json);
    let mut service = AdminService::start(&topics, "claims-e2e", "1s", &[]);
    let port = service.port;
    let token = token(TENANT, "admin-oid-claims");
    wait_until("the admin API", WAIT, || {
        http(
            port,
            "GET",
            &format!("/v1/tenants/{TENANT}/claims"),
            &token,
            None,
        )
        .is_some_and(|r| r.status == 200)
    });

    // Three users refused in turn, for want of a seat: three pending claims.
    let refused_at = [now - 30_000, now - 20_000, now - 10_000];
    let events: Vec<_> = ["u1", "u2", "u3"]
        .iter()
        .zip(refused_at)
        .map(|(user, at)| Ev::saved(TENANT, &format!("e-{user}"), user, at).record())
        .collect();
    publish(&topics, &events, Format::Json);
    wait_until("three pending claims", WAIT, || {
        rows_with(port, &token, "?status=pending").len() == 3
    });
    assert!(
        rows_with(port, &token, "?status=failed").is_empty(),
        "a refusal for want of a seat shows as its claim"
    );

    // A snapshot with two seats: the two oldest are assigned, the third still waits.
    publish(
        &topics,
        &[inventory(
            TENANT,
            PER_USER,
            2,
            0,
            Timestamp::now().as_millis(),
        )],
        Format::Json,
    );
    wait_until("two fulfilled claims", WAIT, || {
        rows_with(port, &token, "?status=fulfilled").len() == 2
    });
    let rows = rows_with(port, &token, "?sort=firstSeen");
    let seen: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["userId"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [("u1", "fulfilled"), ("u2", "fulfilled"), ("u3", "pending")]
    );
    for (row, at) in rows.iter().zip(refused_at) {
        assert_eq!(millis(&row["pendingSince"]), at, "{row}");
        assert_eq!(row["product"], PER_USER);
        assert_eq!(row["policyName"], "policy pol");
    }
    assert!(rows[0]["assignmentId"].is_string() && rows[2].get("assignmentId").is_none());

    // u1's history: the refusal, the claim and the assignment that fulfilled it.
    let history = get(
        port,
        &format!("/v1/tenants/{TENANT}/users/u1/history"),
        &token,
    )
    .json();
    let failure = &history["failures"][0];
    assert_eq!(
        (failure["reason"].as_str(), failure["count"].as_u64()),
        (Some("NO_LICENSES_AVAILABLE"), Some(1))
    );
    assert_eq!(millis(&failure["firstSeen"]), refused_at[0]);
    assert_eq!(history["claims"][0]["status"], "fulfilled");
    let assignment = &history["assignments"][0];
    assert_eq!(assignment["assignmentId"], rows[0]["assignmentId"]);
    assert_eq!(millis(&assignment["pendingSince"]), refused_at[0]);
    assert_eq!(assignment["policyId"], "pol");

    // The report over HTTP, and the same figures from the topics with `autoclaim report`.
    let report = get(port, &format!("/v1/tenants/{TENANT}/report?days=1"), &token).json();
    check_report_claims(&report);
    let out = bin()
        .args([
            "report",
            "--brokers",
            &brokers(),
            "--tenant",
            TENANT,
            "--days",
            "1",
            "--format",
            "json",
        ])
        .args(["--assignments-topic", &topics.assignments])
        .args([
            "--claims-topic",
            &topics.claims,
            "--failures-topic",
            &topics.failures,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_report_claims(&cli);
    assert_eq!(cli["total"], 2);
    let out = bin()
        .args([
            "report",
            "--brokers",
            &brokers(),
            "--tenant",
            TENANT,
            "--days",
            "1",
        ])
        .args(["--assignments-topic", &topics.assignments])
        .args([
            "--claims-topic",
            &topics.claims,
            "--failures-topic",
            &topics.failures,
        ])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("policy pol (pol), NO_LICENSES_AVAILABLE: 3 users, 3 events"),
        "{table}"
    );
    assert!(
        table.contains("Claims waiting for a licence now: 1"),
        "{table}"
    );
    assert!(
        table.contains(&format!("{PER_USER}: 1 (the oldest since ")),
        "{table}"
    );

    let status = service.stop();
    assert!(status.success(), "clean exit; log:\n{}", service.log_text());
}

/// Three users refused for want of a seat under the policy, one claim still waiting.
fn check_report_claims(report: &Value) {
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report}");
    assert_eq!(failures[0]["policyId"], "pol");
    assert_eq!(failures[0]["reason"], "NO_LICENSES_AVAILABLE");
    assert_eq!(
        (
            failures[0]["users"].as_u64(),
            failures[0]["events"].as_u64()
        ),
        (Some(3), Some(3))
    );
    let pending = report["pendingClaims"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{report}");
    assert_eq!(
        (
            pending[0]["product"].as_str(),
            pending[0]["pending"].as_u64()
        ),
        (Some(PER_USER), Some(1))
    );
}
