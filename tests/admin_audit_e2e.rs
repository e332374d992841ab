//! The audit log against a real Kafka broker: `create-topics` makes the audit topic with
//! `cleanup.policy=delete` and the retention asked for; a policy created and changed through the
//! HTTP API of `autoclaim run` lands on it, each entry with the versions before and after and
//! beside the version on the policies topic; a transaction aborted on both topics is never seen;
//! and a fresh admin view (a restarted service) reads the log back from Kafka and answers "who
//! changed this policy". Needs AUTOCLAIM_TEST_BROKERS (see `scripts/kafka`).
mod admin_support;
mod kafka_support;

use std::time::Duration;

use admin_support::*;
use autoclaim::pipeline::clients;
use autoclaim::wire::{codec, pb, Format};
use kafka_support::*;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{json, Value};

const TENANT: &str = "tenant-audit";
const OID: &str = "admin-oid-audit";
const PER_USER: &str = "power_automate_per_user";
const WAIT: Duration = Duration::from_secs(120);
/// What `create-topics` is told to keep the audit log for: 30 days.
const RETENTION_MS: &str = "2592000000";

fn call(port: u16, method: &str, path: &str, token: &str, body: Option<&Value>) -> Reply {
    http(port, method, path, token, body)
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP response"))
}

fn create_topics_with_the_cli(topics: &Topics) {
    let out = bin()
        .args([
            "create-topics",
            "--brokers",
            &brokers(),
            "--partitions",
            "1",
        ])
        .args(["--audit-retention", "30d"])
        .args(topics.command_line_args())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The topic's config value of `key`, as the broker describes it.
fn topic_config(topic: &str, key: &str) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> = clients::admin(&kafka()).create().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let described = runtime
        .block_on(admin.describe_configs(
            &[ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("describe configs");
    let resource = described
        .into_iter()
        .next()
        .unwrap()
        .expect("the topic's configs");
    resource.get(key).and_then(|e| e.value.clone())
}

fn audit_entries(topics: &Topics) -> Vec<(Read, pb::AuditEntry)> {
    read_committed(&topics.audit)
        .into_iter()
        .map(|r| {
            let entry = codec::decode(r.value.as_deref().unwrap(), Format::Json).unwrap();
            (r, entry)
        })
        .collect()
}

fn policy_versions(topics: &Topics) -> Vec<pb::Policy> {
    read_committed(&topics.policies)
        .iter()
        .map(|r| codec::decode(r.value.as_deref().unwrap(), Format::Json).unwrap())
        .collect()
}

fn policy_of(version: &Option<pb::AuditedVersion>) -> Option<&pb::Policy> {
    match version.as_ref()?.version.as_ref()? {
        pb::audited_version::Version::Policy(p) => Some(p),
        pb::audited_version::Version::Settings(_) => None,
    }
}

/// A change of the policy and its audit entry written in one transaction that is then aborted,
/// as an instance that failed half-way would leave them.
fn abort_a_change(topics: &Topics, policy: &pb::Policy) {
    let id = format!("t-{}-tamper", topics.activity);
    let producer: ThreadedProducer<DefaultProducerContext> =
        clients::transactional_producer(&kafka(), &id, Default::default())
            .create()
            .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    let never = pb::Policy {
        name: "Never recorded".into(),
        ..policy.clone()
    };
    let entry = pb::AuditEntry {
        entry_id: "aborted-entry".into(),
        tenant_id: TENANT.into(),
        action: pb::AuditAction::PolicyUpdated as i32,
        policy_id: policy.policy_id.clone(),
        made_at: never.changed_at,
        ..Default::default()
    };
    let key = format!("{TENANT}/policy/{}", policy.policy_id);
    let value = codec::encode(&never, Format::Json);
    producer
        .send(BaseRecord::to(&topics.policies).key(&key).payload(&value))
        .unwrap();
    let value = codec::encode(&entry, Format::Json);
    producer
        .send(BaseRecord::to(&topics.audit).key(TENANT).payload(&value))
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    producer.abort_transaction(Duration::from_secs(30)).unwrap();
}

#[test]
fn a_policy_change_lands_on_the_audit_topic_and_a_fresh_view_reads_it_back() {
    let topics = unique_topics("audit");
    create_topics_with_the_cli(&topics);
    // Never compacted, kept as long as asked, one partition (one order of changes).
    assert_eq!(
        topic_config(&topics.audit, "cleanup.policy").as_deref(),
        Some("delete")
    );
    assert_eq!(
        topic_config(&topics.audit, "retention.ms").as_deref(),
        Some(RETENTION_MS)
    );
    let counts = autoclaim::pipeline::topics::partition_counts(&kafka(), &[&topics.audit]).unwrap();
    assert_eq!(counts[&topics.audit], 1);

    let mut service = AdminService::start(&topics, "audit-e2e", "1h", &[]);
    let port = service.port;
    let token = named_token(TENANT, OID, "Megan Bowen");
    let policies = format!("/v1/tenants/{TENANT}/policies");
    wait_until("the admin API", WAIT, || {
        http(port, "GET", &policies, &token, None).is_some_and(|r| r.status == 200)
    });
    let reply = call(
        port,
        "POST",
        &policies,
        &token,
        Some(&json!({"name": "Flows", "product": PER_USER, "enabled": true})),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["policy"]["policyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let policy_path = format!("{policies}/{id}");
    let reply = call(
        port,
        "PATCH",
        &policy_path,
        &token,
        Some(&json!({"name": "Premium flows"})),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);

    // On the audit topic: both changes, keyed by tenant, with who and the versions before and after.
    let entries = audit_entries(&topics);
    let [(created_record, created), (renamed_record, renamed)] = entries.as_slice() else {
        panic!("{} audit records", entries.len())
    };
    for record in [created_record, renamed_record] {
        assert_eq!(record.key.as_deref(), Some(TENANT.as_bytes()));
        assert_eq!(record.headers["content-type"], "application/json");
    }
    assert_eq!(created.action(), pb::AuditAction::PolicyCreated);
    assert!(created.before.is_none());
    assert_eq!(renamed.action(), pb::AuditAction::PolicyUpdated);
    assert_eq!(policy_of(&renamed.before).unwrap().name, "Flows");
    assert_eq!(policy_of(&renamed.after).unwrap().name, "Premium flows");
    let actor = renamed.actor.clone().unwrap();
    assert_eq!(
        (actor.object_id.as_str(), actor.display_name.as_str()),
        (OID, "Megan Bowen")
    );
    // ...beside the versions on the policies topic, the same ones.
    let versions = policy_versions(&topics);
    assert_eq!(versions.len(), 2);
    assert_eq!(policy_of(&created.after), Some(&versions[0]));
    assert_eq!(policy_of(&renamed.after), Some(&versions[1]));

    // A change whose transaction is aborted is seen by no reader: not its version, not its entry.
    abort_a_change(&topics, &versions[1]);
    assert_eq!(audit_entries(&topics).len(), 2);
    assert_eq!(policy_versions(&topics).len(), 2);

    // A fresh view, as after a restart, reads the log back from the topic.
    assert!(
        service.stop().success(),
        "clean exit; log:\n{}",
        service.log_text()
    );
    let mut again = AdminService::start(&topics, "audit-e2e-again", "1h", &[]);
    let port = again.port;
    let audit = format!("/v1/tenants/{TENANT}/audit?policyId={id}");
    wait_until("the restarted admin API", WAIT, || {
        http(port, "GET", &audit, &token, None).is_some_and(|r| r.status == 200)
    });
    let page = call(port, "GET", &audit, &token, None).json();
    let listed: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entryId"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [renamed.entry_id.as_str(), created.entry_id.as_str()]
    );
    assert_eq!(page["entries"][0]["actor"]["displayName"], "Megan Bowen");
    assert_eq!(page["entries"][0]["before"]["policy"]["name"], "Flows");
    let everything = call(
        port,
        "GET",
        &format!("/v1/tenants/{TENANT}/audit"),
        &token,
        None,
    );
    assert!(
        !everything.body.contains("aborted-entry"),
        "{}",
        everything.body
    );
    let policy = call(port, "GET", &policy_path, &token, None).json();
    assert_eq!(policy["policy"]["name"], "Premium flows");

    // The restarted instance's writer fenced the old one's and writes on.
    let reply = call(
        port,
        "PATCH",
        &policy_path,
        &token,
        Some(&json!({"enabled": false})),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let page = call(port, "GET", &audit, &token, None).json();
    assert_eq!(page["entries"][0]["action"], "POLICY_DISABLED");
    assert_eq!(page["entries"].as_array().unwrap().len(), 3);
    assert!(
        again.stop().success(),
        "clean exit; log:\n{}",
        again.log_text()
    );
}
