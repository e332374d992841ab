//! The admin console in a real browser: `autoclaim run` with the admin API against a real Kafka
//! broker, and `tests/browser/console.test.mjs` driving Debian's Chromium through playwright-core.
//! The script signs in, turns autoclaim on, creates a policy with a backup and an excluded app and
//! watches it propagate; this test then publishes activity, and the script sees the available
//! licences fall and the report rows appear, downloads the CSV, and checks refusals, accessibility
//! and keyboard use. Screenshots (desktop and phone width) go to
//! `$CARGO_TARGET_DIR/console-screenshots/`.
//!
//! Needs AUTOCLAIM_TEST_BROKERS, `chromium` and `node`, and `npm ci` in tests/browser (`.ci/run`
//! does all of it). Without the browser tools the test is skipped, except under CI, where it fails.
mod admin_support;
mod kafka_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use admin_support::*;
use autoclaim::domain::time::Timestamp;
use autoclaim::wire::convert::to_wire_timestamp;
use autoclaim::wire::{pb, Format};
use kafka_support::*;
use serde_json::Value;

const TENANT: &str = "tenant-console";
const OTHER: &str = "tenant-other";
const PER_USER: &str = "power_automate_per_user";
const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What the browser test needs; `None` when all is there, else what is missing.
fn missing_tools() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    let mut missing = Vec::new();
    if !Path::new(&chromium).exists() {
        missing.push(format!("{chromium} (apt-get install chromium)"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node (apt-get install nodejs npm)".into());
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        missing.push("playwright-core (npm ci in tests/browser)".into());
    }
    (!missing.is_empty()).then(|| missing.join(", "))
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

const USERS: [&str; 3] = ["megan", "alex", "isaiah"];

/// Ten per-user licences, none assigned, and three eligible users.
fn tables() -> Vec<pb::ReplayRecord> {
    let hour_ago = Timestamp::now().as_millis() - 3_600_000;
    let mut tables = vec![record(pb::replay_record::Record::Inventory(
        pb::LicenseInventory {
            tenant_id: TENANT.into(),
            product: PER_USER.into(),
            purchased_units: 10,
            assigned_units: 0,
            as_of: ts(hour_ago),
        },
    ))];
    for user in USERS {
        tables.push(record(pb::replay_record::Record::DirectoryUser(
            pb::DirectoryUser {
                tenant_id: TENANT.into(),
                user_id: user.into(),
                account_enabled: true,
                user_type: pb::directory_user::UserType::Member as i32,
                usage_location: "US".into(),
                as_of: ts(hour_ago),
                ..Default::default()
            },
        )));
    }
    tables
}

fn licence_requests() -> Vec<pb::ReplayRecord> {
    let now = Timestamp::now().as_millis();
    activity_records(USERS.iter().enumerate().map(|(i, user)| pb::ActivityEvent {
        schema_version: 1,
        event_id: format!("console-{i}"),
        tenant_id: TENANT.into(),
        occurred_at: ts(now),
        actor_user_id: (*user).into(),
        kind: pb::ActivityKind::LicenseRequested as i32,
        source: pb::ActivitySource::Portal as i32,
        requested_product: PER_USER.into(),
        ..Default::default()
    }))
}

/// The policy the browser created, once it assigns licences (ACTIVE, with autoclaim in force).
fn policy_assigning(port: u16, token: &str) -> bool {
    let Some(Reply {
        status: 200, body, ..
    }) = http(
        port,
        "GET",
        &format!("/v1/tenants/{TENANT}/policies"),
        token,
        None,
    )
    else {
        return false;
    };
    let list: Value = serde_json::from_str(&body).unwrap_or_default();
    list["policies"].as_array().is_some_and(|ps| {
        ps.iter()
            .any(|p| p["policy"]["name"] == "Flows for everyone" && p["assigningLicenses"] == true)
    })
}

#[test]
fn the_console_in_a_browser_manages_policies_and_shows_live_numbers() {
    if let Some(missing) = missing_tools() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the browser test needs {missing}: .ci/run installs them"
        );
        eprintln!(
            "\n!!! SKIPPED: the browser test needs {missing}; the console was NOT tested !!!\n"
        );
        return;
    }
    let topics = unique_topics("console");
    create_topics(&topics, 1);
    let service = AdminService::start(&topics, "console", "3s", &[]);
    let port = service.port;
    let (token, other) = (
        token(TENANT, "console-admin"),
        token(OTHER, "console-admin"),
    );
    wait_until("the admin API", Duration::from_secs(120), || {
        http(
            port,
            "GET",
            &format!("/v1/tenants/{TENANT}/settings"),
            &token,
            None,
        )
        .is_some_and(|r| r.status == 200)
    });
    publish(&topics, &tables(), Format::Json);

    let shots = PathBuf::from(
        std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into()),
    )
    .join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let mut node = Command::new("node")
        .current_dir(browser_dir())
        .arg("console.test.mjs")
        .arg(format!("http://127.0.0.1:{port}/"))
        .args([&token, &other, TENANT])
        .arg(&shots)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");

    // The activity goes out once the policy the page created assigns licences.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut published = false;
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = node.kill();
            panic!("the browser test did not finish in time");
        }
        if !published && policy_assigning(port, &token) {
            publish(&topics, &licence_requests(), Format::Json);
            published = true;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let log = service.log_text();
    assert!(
        status.success() && shots.join("PASSED").exists(),
        "the browser test failed (screenshots in {}); service log:\n{log}",
        shots.display()
    );
    assert!(published, "the page never made the policy assign");
}
