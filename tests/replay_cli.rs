//! The `autoclaim replay` command, run as a process on the example input and on crafted files.
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const QUICKSTART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.jsonl");
const EXCHANGE_S_FOUNDATION: &str = "113feb6c-3fe4-4440-bddc-54d774bf0318";

/// Runs the binary with `args`, feeding `stdin` if given. The propagation delay and event time
/// skew variables of the caller's environment are removed so that only the arguments decide.
fn autoclaim(args: &[&str], stdin: Option<Vec<u8>>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autoclaim"));
    cmd.args(args)
        .env_remove("AUTOCLAIM_PROPAGATION_DELAY")
        .env_remove("AUTOCLAIM_MAX_EVENT_TIME_SKEW")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the binary runs");
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let out = child.wait_with_output().expect("the binary finishes");
    if let Some(w) = writer {
        w.join().unwrap();
    }
    out
}

fn replay_file(path: &str, extra: &[&str]) -> Output {
    let mut args = vec!["replay", "--input", path];
    args.extend_from_slice(extra);
    autoclaim(&args, None)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One parsed decision per stdout line.
fn decisions(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .expect("stdout is UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn field<'a>(d: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(d, |v, k| &v[*k])
        .as_str()
        .unwrap_or_default()
}

/// A file in this test run's temporary directory.
fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("replay_cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn quickstart_lines() -> Vec<String> {
    std::fs::read_to_string(QUICKSTART)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What examples/quickstart.jsonl must give, event by event: (event, subject, outcome, reason,
/// product, policy), worked out by hand from design section 2 with the default delay of 2 h.
const QUICKSTART_EXPECTED: &[(&str, &str, &str, &str, &str, &str)] = &[
    // 09:00: settings changed at 08:00 are not in force before 10:00.
    ("evt-001", "alice", "AUTOCLAIM_OFF", "", "", ""),
    // Standard flow.
    ("evt-002", "alice", "NOT_REQUIRED", "", "", ""),
    // Per user is the narrowest sufficient product; its one seat (2 - 1) goes to alice.
    (
        "evt-003",
        "alice",
        "ASSIGNED",
        "",
        "power_automate_per_user",
        "pol-flows",
    ),
    // Her own assignment, not yet in the directory.
    ("evt-004", "alice", "ALREADY_ENTITLED", "", "", ""),
    // Bob holds premium.
    ("evt-005", "bob", "ALREADY_ENTITLED", "", "", ""),
    (
        "evt-006",
        "carol",
        "NOT_ELIGIBLE",
        "ACCOUNT_DISABLED",
        "",
        "",
    ),
    ("evt-007", "dave", "NOT_ELIGIBLE", "GUEST", "", ""),
    (
        "evt-008",
        "erin",
        "FAILED",
        "USAGE_LOCATION_MISSING",
        "",
        "",
    ),
    ("evt-009", "zed", "NOT_ELIGIBLE", "UNKNOWN_USER", "", ""),
    // Per user is out of seats: pol-flows' backup, premium (3 - 1 = 2 seats).
    (
        "evt-010",
        "frank",
        "ASSIGNED",
        "",
        "power_automate_premium",
        "pol-flows",
    ),
    // An automated flow's trigger needs the owner's licence: grace takes the last premium seat.
    (
        "evt-011",
        "grace",
        "ASSIGNED",
        "",
        "power_automate_premium",
        "pol-flows",
    ),
    // RPA: premium only, no seat left.
    (
        "evt-012",
        "heidi",
        "FAILED",
        "NO_LICENSES_AVAILABLE",
        "power_automate_premium",
        "pol-flows",
    ),
    // New snapshot at 11:00: 5 - 3 = 2 (frank's and grace's are in its 3, not counted again);
    // heidi's claim, waiting since evt-012, is decided again at once and gets one.
    (
        "evt-012",
        "heidi",
        "ASSIGNED",
        "",
        "power_automate_premium",
        "pol-flows",
    ),
    // Her own assignment.
    ("evt-013", "heidi", "ALREADY_ENTITLED", "", "", ""),
    // 12:00: scope change and pol-flows' disabling (11:00) not in force until 13:00.
    (
        "evt-014",
        "ivan",
        "ASSIGNED",
        "",
        "power_automate_premium",
        "pol-flows",
    ),
    // 13:30: managed environments only, and this flow is unmanaged.
    ("evt-015", "judy", "OUT_OF_SCOPE", "", "", ""),
    // A licence request is in scope; pol-flows is off, pol-rpa's premium has no seat.
    (
        "evt-016",
        "judy",
        "FAILED",
        "NO_LICENSES_AVAILABLE",
        "power_automate_premium",
        "pol-rpa",
    ),
    // Fabrikam never turned autoclaim on.
    ("evt-017", "judy", "AUTOCLAIM_OFF", "", "", ""),
];

#[track_caller]
fn check_quickstart(ds: &[Value]) {
    assert_eq!(
        ds.len(),
        QUICKSTART_EXPECTED.len(),
        "one decision per activity, and one per waiting claim decided again: {ds:#?}"
    );
    for (d, &(event, subject, outcome, reason, product, policy)) in
        ds.iter().zip(QUICKSTART_EXPECTED)
    {
        assert_eq!(field(d, &["eventId"]), event, "decisions in input order");
        assert_eq!(field(d, &["subjectUserId"]), subject, "{d}");
        assert_eq!(field(d, &["outcome"]), outcome, "{d}");
        assert_eq!(field(d, &["reason"]), reason, "{d}");
        if !product.is_empty() {
            assert_eq!(field(d, &["product"]), product, "{d}");
        }
        if !policy.is_empty() {
            assert_eq!(field(d, &["policyId"]), policy, "{d}");
        }
        match outcome {
            "ASSIGNED" => {
                assert_eq!(field(d, &["assignment", "userId"]), subject, "{d}");
                assert_eq!(field(d, &["assignment", "product"]), product, "{d}");
                assert_eq!(field(d, &["assignment", "triggerEventId"]), event, "{d}");
                assert!(d.get("failure").is_none(), "{d}");
            }
            "FAILED" => {
                assert_eq!(field(d, &["failure", "reason"]), reason, "{d}");
                assert_eq!(field(d, &["failure", "userId"]), subject, "{d}");
                assert!(d.get("assignment").is_none(), "{d}");
            }
            _ => {
                assert!(d.get("assignment").is_none(), "{d}");
                assert!(d.get("failure").is_none(), "{d}");
            }
        }
        assert_eq!(
            field(d, &["tenantId"]),
            if event == "evt-017" {
                "fabrikam"
            } else {
                "contoso"
            }
        );
    }
    // evt-003: per user without the excluded app.
    let plans = ds[2]["assignment"]["disabledPlanIds"]
        .as_array()
        .expect("disabledPlanIds");
    assert_eq!(plans, &[Value::from(EXCHANGE_S_FOUNDATION)], "{}", ds[2]);
    assert_eq!(
        field(&ds[2], &["assignment", "skuId"]),
        "4a51bf65-409c-4a91-b845-1121b571cc9d"
    );
    // Premium from pol-flows: no exclusions for premium in that policy.
    for d in &ds[9..11] {
        assert!(
            d["assignment"]
                .get("disabledPlanIds")
                .is_none_or(|p| p.as_array().is_some_and(|a| a.is_empty())),
            "{d}"
        );
        assert_eq!(
            field(d, &["assignment", "skuId"]),
            "eda1941c-3c4f-4995-b5eb-e85a42175ab9"
        );
    }
}

#[test]
fn quickstart_gives_the_documented_decisions() {
    let out = replay_file(QUICKSTART, &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    check_quickstart(&decisions(&out));
    assert!(
        !stderr(&out).contains("line "),
        "no rejected line: {}",
        stderr(&out)
    );
}

#[test]
fn stdin_input_gives_the_same_output_as_the_file() {
    let from_file = replay_file(QUICKSTART, &[]);
    let bytes = std::fs::read(QUICKSTART).unwrap();
    let from_stdin = autoclaim(&["replay", "--input", "-"], Some(bytes.clone()));
    assert_eq!(from_stdin.status.code(), Some(0), "{}", stderr(&from_stdin));
    assert_eq!(from_stdin.stdout, from_file.stdout);
    check_quickstart(&decisions(&from_stdin));
    // Standard input is the default.
    let default = autoclaim(&["replay"], Some(bytes));
    assert_eq!(default.status.code(), Some(0), "{}", stderr(&default));
    assert_eq!(default.stdout, from_file.stdout);
}

#[test]
fn two_runs_give_byte_identical_output() {
    let a = replay_file(QUICKSTART, &[]);
    let b = replay_file(QUICKSTART, &[]);
    assert!(!a.stdout.is_empty());
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(a.status.code(), b.status.code());
}

#[test]
fn a_malformed_line_is_reported_with_its_number_and_replay_goes_on() {
    let mut lines = quickstart_lines();
    // Physical line numbers count blank lines too.
    lines.insert(9, String::new()); // line 10
    lines.insert(
        19,
        r#"{"activity": {"eventId": "evt-broken", "tenantId": "#.into(),
    ); // line 20
    lines.insert(
        24,
        r#"{"activity":{"eventId":"evt-no-tenant","occurredAt":"2026-03-02T10:33:00Z","actorUserId":"bob","kind":"GO_PREMIUM_SELECTED","source":"DESKTOP"}}"#
            .into(),
    ); // line 25
    let path = temp_file("malformed.jsonl", (lines.join("\n") + "\n").as_bytes());
    let out = replay_file(path.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    let line_20 = err
        .lines()
        .find(|l| l.starts_with("line 20:"))
        .unwrap_or_else(|| panic!("line 20 reported: {err}"));
    assert!(line_20.to_lowercase().contains("json"), "{line_20}");
    let line_25 = err
        .lines()
        .find(|l| l.starts_with("line 25:"))
        .unwrap_or_else(|| panic!("line 25 reported: {err}"));
    assert!(line_25.contains("tenantId"), "{line_25}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("line ")).count(),
        2,
        "only the two bad lines: {err}"
    );
    // Every good line is still decided, exactly as without the bad ones.
    check_quickstart(&decisions(&out));
    assert_eq!(out.stdout, replay_file(QUICKSTART, &[]).stdout);
}

#[test]
fn a_line_that_is_not_utf8_is_rejected_and_replay_goes_on() {
    // Design 2.5 step 1: malformed input is dead-lettered with the reason, never a stall. Bytes
    // that are not UTF-8 are malformed input like any other.
    let mut bytes = Vec::new();
    for (i, line) in quickstart_lines().iter().enumerate() {
        if i == 20 {
            bytes.extend_from_slice(b"{\"activity\": \"\xff\xfe\"}\n"); // line 21
        }
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
    }
    let path = temp_file("not-utf8.jsonl", &bytes);
    let out = replay_file(path.to_str().unwrap(), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.lines().any(|l| l.starts_with("line 21:")), "{err}");
    check_quickstart(&decisions(&out));
}

#[test]
fn the_propagation_delay_flag_decides_when_changes_are_in_force() {
    // Settings turned on at 08:00:00; events at 08:00:29 and 08:00:30.
    let input = [
        r#"{"settings":{"tenantId":"t","autoclaimEnabled":true,"changedAt":"2026-03-02T08:00:00Z"}}"#,
        r#"{"policy":{"tenantId":"t","policyId":"p","name":"P","product":"power_automate_per_user","enabled":true,"createdAt":"2026-03-02T07:00:00Z","changedAt":"2026-03-02T07:00:00Z"}}"#,
        r#"{"inventory":{"tenantId":"t","product":"power_automate_per_user","purchasedUnits":"5","assignedUnits":"0","asOf":"2026-03-02T07:00:00Z"}}"#,
        r#"{"directoryUser":{"tenantId":"t","userId":"u1","accountEnabled":true,"userType":"MEMBER","usageLocation":"US","asOf":"2026-03-02T07:00:00Z"}}"#,
        r#"{"directoryUser":{"tenantId":"t","userId":"u2","accountEnabled":true,"userType":"MEMBER","usageLocation":"US","asOf":"2026-03-02T07:00:00Z"}}"#,
        r#"{"activity":{"eventId":"e1","tenantId":"t","occurredAt":"2026-03-02T08:00:29.999Z","actorUserId":"u1","kind":"LICENSE_REQUESTED","source":"PORTAL","requestedProduct":"power_automate_per_user"}}"#,
        r#"{"activity":{"eventId":"e2","tenantId":"t","occurredAt":"2026-03-02T08:00:30Z","actorUserId":"u2","kind":"LICENSE_REQUESTED","source":"PORTAL","requestedProduct":"power_automate_per_user"}}"#,
    ]
    .join("\n");
    let path = temp_file("delay.jsonl", input.as_bytes());
    let path = path.to_str().unwrap();

    let outcomes = |out: &Output| -> Vec<String> {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
        decisions(out)
            .iter()
            .map(|d| field(d, &["outcome"]).to_owned())
            .collect()
    };
    let fast = replay_file(path, &["--propagation-delay", "30s"]);
    assert_eq!(outcomes(&fast), ["AUTOCLAIM_OFF", "ASSIGNED"]);
    // The default is 2 h: neither is in force yet.
    let default = replay_file(path, &[]);
    assert_eq!(outcomes(&default), ["AUTOCLAIM_OFF", "AUTOCLAIM_OFF"]);
    let slow = replay_file(path, &["--propagation-delay", "31s"]);
    assert_eq!(outcomes(&slow), ["AUTOCLAIM_OFF", "AUTOCLAIM_OFF"]);
    // The environment variable does the same as the flag.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autoclaim"));
    let env = cmd
        .args(["replay", "--input", path])
        .env("AUTOCLAIM_PROPAGATION_DELAY", "30s")
        .output()
        .unwrap();
    assert_eq!(env.stdout, fast.stdout);

    // On the quickstart, evt-001 (09:00, settings changed at 08:00) is now in force.
    let quick = replay_file(QUICKSTART, &["--propagation-delay", "30s"]);
    let ds = decisions(&quick);
    assert_eq!(field(&ds[0], &["eventId"]), "evt-001");
    assert_eq!(field(&ds[0], &["outcome"]), "ASSIGNED", "{}", ds[0]);
}

/// A tenant with one per-user seat, three users, and four events: a year ahead of its line's
/// `writtenAt` (line 6), exactly the default skew ahead (line 7), and two exempt RPA flows.
const SKEW_INPUT: &[&str] = &[
    r#"{"settings":{"tenantId":"t","autoclaimEnabled":true,"changedAt":"2026-03-02T06:00:00Z"}}"#,
    r#"{"policy":{"tenantId":"t","policyId":"p","name":"P","product":"power_automate_per_user","backupProducts":["power_automate_premium"],"enabled":true,"createdAt":"2026-03-02T06:00:00Z","changedAt":"2026-03-02T06:00:00Z"}}"#,
    r#"{"inventory":{"tenantId":"t","product":"power_automate_per_user","purchasedUnits":"1","assignedUnits":"0","asOf":"2026-03-02T06:00:00Z"}}"#,
    r#"{"directoryUser":{"tenantId":"t","userId":"u1","accountEnabled":true,"userType":"MEMBER","usageLocation":"US","asOf":"2026-03-02T06:00:00Z"}}"#,
    r#"{"directoryUser":{"tenantId":"t","userId":"u2","accountEnabled":true,"userType":"MEMBER","usageLocation":"US","asOf":"2026-03-02T06:00:00Z"}}"#,
    r#"{"writtenAt":"2026-03-02T10:00:00Z","activity":{"eventId":"e1","tenantId":"t","occurredAt":"2027-03-02T10:00:00Z","actorUserId":"u1","kind":"LICENSE_REQUESTED","source":"PORTAL","requestedProduct":"power_automate_per_user"}}"#,
    r#"{"writtenAt":"2026-03-02T10:00:00Z","activity":{"eventId":"e2","tenantId":"t","occurredAt":"2026-03-02T10:05:00Z","actorUserId":"u2","kind":"LICENSE_REQUESTED","source":"PORTAL","requestedProduct":"power_automate_per_user"}}"#,
    r#"{"writtenAt":"2026-03-02T11:00:00Z","activity":{"eventId":"e3","tenantId":"t","occurredAt":"2026-03-02T11:00:00Z","actorUserId":"u1","kind":"CLOUD_FLOW_TRIGGERED","source":"PORTAL","flow":{"flowId":"f3","ownerUserId":"u1","triggerType":"AUTOMATED","usesPremiumConnectors":true,"usesAttendedRpa":true,"managedEnvironment":true,"coveredByProcessPlan":true}}}"#,
    r#"{"activity":{"eventId":"e4","tenantId":"t","occurredAt":"2026-03-02T11:01:00Z","actorUserId":"u1","kind":"CLOUD_FLOW_SAVED","source":"PORTAL","flow":{"flowId":"f4","ownerUserId":"u1","triggerType":"INSTANT","usesAttendedRpa":true,"runs_in_licensed_app_context":true}}}"#,
];

/// (eventId, outcome) of each decision.
fn outcomes_of(out: &Output) -> Vec<(String, String)> {
    decisions(out)
        .iter()
        .map(|d| {
            (
                field(d, &["eventId"]).to_owned(),
                field(d, &["outcome"]).to_owned(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(e, o)| ((*e).to_owned(), (*o).to_owned()))
        .collect()
}

#[test]
fn an_event_beyond_the_skew_after_its_written_at_is_rejected_and_exempt_flows_need_nothing() {
    let path = temp_file("skew.jsonl", SKEW_INPUT.join("\n").as_bytes());
    let path = path.to_str().unwrap();
    let out = replay_file(path, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let rejected: Vec<&str> = err.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(rejected.len(), 1, "{err}");
    let line = rejected[0];
    assert!(line.starts_with("line 6: "), "{line}");
    assert!(line.ends_with("(event_time_in_future)"), "{line}");
    for part in ["2027-03-02T10:00:00.000Z", "2026-03-02T10:00:00.000Z", "5m"] {
        assert!(line.contains(part), "{part} in {line}");
    }
    // e2, at the bound, is decided and takes the one seat the year-ahead event did not take.
    assert_eq!(
        outcomes_of(&out),
        pairs(&[
            ("e2", "ASSIGNED"),
            ("e3", "NOT_REQUIRED"),
            ("e4", "NOT_REQUIRED")
        ])
    );
    assert_eq!(field(&decisions(&out)[0], &["assignment", "userId"]), "u2");

    // With a skew of a year and a day, the future event is decided: under the policy at its own
    // time, it takes the seat, and e2, which is on time, fails.
    let lax = replay_file(path, &["--max-event-time-skew", "366days"]);
    assert_eq!(lax.status.code(), Some(0), "{}", stderr(&lax));
    assert_eq!(
        outcomes_of(&lax),
        pairs(&[
            ("e1", "ASSIGNED"),
            ("e2", "FAILED"),
            ("e3", "NOT_REQUIRED"),
            ("e4", "NOT_REQUIRED")
        ])
    );
    // The environment variable does the same as the flag; a skew of 0 refuses e2 too.
    let env = Command::new(env!("CARGO_BIN_EXE_autoclaim"))
        .args(["replay", "--input", path])
        .env_remove("AUTOCLAIM_PROPAGATION_DELAY")
        .env("AUTOCLAIM_MAX_EVENT_TIME_SKEW", "366days")
        .output()
        .unwrap();
    assert_eq!(env.stdout, lax.stdout);
    let strict = replay_file(path, &["--max-event-time-skew", "0s"]);
    let err = stderr(&strict);
    assert!(err.lines().any(|l| l.starts_with("line 7: ")), "{err}");
    assert_eq!(
        outcomes_of(&strict),
        pairs(&[("e3", "NOT_REQUIRED"), ("e4", "NOT_REQUIRED")])
    );
}

#[test]
fn bad_arguments_and_missing_files_are_errors() {
    let out = replay_file(QUICKSTART, &["--propagation-delay", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let out = replay_file(QUICKSTART, &["--max-event-time-skew", "ahead"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let missing = format!("{}/does-not-exist.jsonl", env!("CARGO_TARGET_TMPDIR"));
    let out = replay_file(&missing, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does-not-exist.jsonl"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn an_empty_input_gives_no_decisions() {
    let out = autoclaim(&["replay", "--input", "-"], Some(b"\n\n".to_vec()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}
