//! Schemathesis (PyPI `schemathesis`) against the OpenAPI document served by a running
//! `autoclaim run`: schema-driven requests, valid and invalid, on every operation and in stateful
//! sequences (create, then read, change and delete what was created), checked against what the
//! document says (statuses, content types, headers, response schemas, refusing invalid data,
//! accepting valid data, authentication). Bounded in time. Needs AUTOCLAIM_TEST_BROKERS and the
//! `schemathesis` command (`.ci/run` installs it; without it, and outside CI, the test says so and
//! passes).
mod admin_support;
mod kafka_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use admin_support::*;
use kafka_support::*;

const TENANT: &str = "tenant-schemathesis";
/// The whole Schemathesis run; it takes seconds, the bound is for a machine under load.
const RUN_BOUND: Duration = Duration::from_secs(240);

/// Test cases per operation and phase: enough to cover each operation's statuses, few enough to
/// stay in seconds. AUTOCLAIM_SCHEMATHESIS_MAX_EXAMPLES and AUTOCLAIM_SCHEMATHESIS_SEED explore
/// further.
const MAX_EXAMPLES: &str = "30";
const SEED: &str = "1";

/// What Schemathesis is told beyond the document. Every check runs, with two adjustments:
/// - `positive_data_acceptance` also accepts 422: the document says what the schema can (types,
///   lengths, patterns, required fields), but some rules are not expressible in it and are
///   answered 422 as documented: product keys come from the product catalog (configurable, so not
///   an enum), a body's tenantId must be the tenant in the path, excluded plans must belong to the
///   policy's products and never be the plan that grants the product's capability;
/// - `use_after_free` is excluded (on the command line): a deleted policy stays readable, marked `"deleted": true` and
///   PROPAGATING, until its deletion is in force after the propagation delay (the processor keeps
///   applying it until then); that is the documented behaviour, not a resource used after free.
const CONFIG: &str = r#"
[parameters]
tenantId = "TENANT"

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"#;

fn schemathesis_present() -> bool {
    Command::new("schemathesis")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn answers(port: u16, path: &str, token: &str) -> bool {
    let Ok(out) = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", &format!("authorization: Bearer {token}")])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
    else {
        return false;
    };
    out.stdout == b"200"
}

#[test]
fn schemathesis_finds_the_running_service_as_its_openapi_document_says() {
    if !schemathesis_present() {
        assert!(
            std::env::var_os("CI").is_none(),
            "schemathesis is not installed: .ci/run installs it (python3 -m pip install schemathesis)"
        );
        eprintln!(
            "\n!!! SKIPPED: schemathesis is not installed (python3 -m pip install schemathesis); \
             the admin API was NOT checked against its OpenAPI document !!!\n"
        );
        return;
    }
    let topics = unique_topics("schemathesis");
    create_topics(&topics, 1);
    let mut service = AdminService::start(
        &topics,
        "schemathesis",
        // Long enough that the stateful sequences read, change and delete policies still
        // propagating (as an administrator would right after creating one).
        "10m",
        // Schemathesis creates many policies; the bound has tests of its own.
        &["--admin-max-policies", "100000"],
    );
    let (port, log) = (service.port, service.log.clone());
    let token = token(TENANT, "schemathesis");
    wait_until("the admin API", Duration::from_secs(120), || {
        answers(port, &format!("/v1/tenants/{TENANT}/settings"), &token)
    });

    let dir = std::env::temp_dir().join(format!("autoclaim-schemathesis-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("schemathesis.toml");
    std::fs::write(&config, CONFIG.replace("TENANT", TENANT)).unwrap();
    let max_examples =
        std::env::var("AUTOCLAIM_SCHEMATHESIS_MAX_EXAMPLES").unwrap_or(MAX_EXAMPLES.into());
    let seed = std::env::var("AUTOCLAIM_SCHEMATHESIS_SEED").unwrap_or(SEED.into());
    let mut run = Command::new("schemathesis")
        .current_dir(&dir)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("http://127.0.0.1:{port}/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--exclude-checks", "use_after_free"])
        .args(["--max-examples", &max_examples])
        .args(["--seed", &seed, "--generation-database", "none"])
        .args(["--request-timeout", "30", "--no-color"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start schemathesis");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > RUN_BOUND {
            let _ = run.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = run.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{report}");
    let status = status.unwrap_or_else(|| panic!("schemathesis ran over {RUN_BOUND:?}"));
    assert!(
        status.success(),
        "schemathesis found the API unlike its document (report above; service log {})",
        log.display()
    );
    assert!(
        service.is_running(),
        "the service stopped: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
