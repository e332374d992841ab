//! The admin API end to end against a real Kafka broker: autoclaim turned on and a policy created
//! through the HTTP API of `autoclaim run` with a development token from `autoclaim token`; the
//! policy assigns only once its propagation delay has passed (judged by the events' time), and the
//! report (over HTTP, and from `autoclaim report`) then shows the assignment.
//! Needs AUTOCLAIM_TEST_BROKERS (see `scripts/kafka`).
mod kafka_support;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autoclaim::domain::time::Timestamp;
use autoclaim::wire::convert::{timestamp, to_wire_timestamp};
use autoclaim::wire::{pb, Format};
use kafka_support::*;
use serde_json::{json, Value};

const SECRET: &str = "e2e-secret-0123456789-abcdefghijklmnopq";
const ISSUER: &str = "https://dev.autoclaim.test";
const AUDIENCE: &str = "autoclaim-admin";
const TENANT: &str = "tenant-e2e";
const PER_USER: &str = "power_automate_per_user";
const DELAY_MS: i64 = 3_000;
const WAIT: Duration = Duration::from_secs(120);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autoclaim"))
}

/// `autoclaim run` with the admin API on a port of our own (`Service::start` binds port 0).
struct Running {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Running {
    fn start(topics: &Topics) -> Running {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!("autoclaim-admin-e2e-{port}.log"));
        let child = bin()
            .args(["run", "--brokers", &brokers()])
            .args(["--group-id", &format!("g-{}", topics.activity)])
            .args(["--transactional-id", &format!("t-{}", topics.activity)])
            .args(["--propagation-delay", "3s"])
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args(topics.command_line_args())
            .env("AUTOCLAIM_ADMIN_HS256_SECRET", SECRET)
            .env("AUTOCLAIM_ADMIN_ISSUER", ISSUER)
            .env("AUTOCLAIM_ADMIN_AUDIENCE", AUDIENCE)
            .env("AUTOCLAIM_LOG", "info,librdkafka=warn,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start autoclaim run");
        Running { child, log, port }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "autoclaim did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A minimal HTTP/1.1 client (one request per connection), enough for a test.
fn http(port: u16, method: &str, path: &str, token: &str, body: Option<&Value>) -> Option<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("content-type: application/json\r\n");
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

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
    let mut service = Running::start(&topics);
    let port = service.port;

    // A development token from the CLI, for the tenant's Global Administrator.
    let out = bin()
        .args(["token", "--tenant", TENANT, "--oid", "admin-oid-1"])
        .env("AUTOCLAIM_ADMIN_HS256_SECRET", SECRET)
        .env("AUTOCLAIM_ADMIN_ISSUER", ISSUER)
        .env("AUTOCLAIM_ADMIN_AUDIENCE", AUDIENCE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
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
