//! `autoclaim demo`, the zero-set-up command of the README: it runs the real loop on the embedded
//! broker, and its outputs equal replay's.
use std::process::Command;

/// Runs the demo with these arguments (and no broker in the environment); its stdout, once it
/// has succeeded.
fn demo(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_autoclaim"))
        .arg("demo")
        .args(args)
        .args(["--http-addr", "127.0.0.1:0"])
        .env_remove("AUTOCLAIM_BROKERS")
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_demo_runs_with_no_set_up_and_matches_replay() {
    let stdout = demo(&["--events", "1500", "--seed", "3"]);
    assert!(
        stdout.contains("no transaction isolation"),
        "the demo must say what the mock broker lacks:\n{stdout}"
    );
    assert!(
        stdout.contains("Processed 1500 activity events"),
        "{stdout}"
    );
    assert!(stdout.contains("Outcomes"), "{stdout}");
    assert!(stdout.contains("Autoclaim report"), "{stdout}");
    assert!(
        stdout.contains("Pipeline outputs equal replay's for the same input: yes"),
        "{stdout}"
    );
    assert!(stdout.contains("/metrics"), "{stdout}");
}

/// The embedded broker keeps at most 5 MB a partition and drops the oldest records beyond that:
/// a large demo must pace its publishing to the pipeline rather than lose events.
#[test]
fn a_demo_of_100000_events_processes_them_all() {
    let stdout = demo(&["--events", "100000"]);
    assert!(
        stdout.contains("Processed 100000 activity events"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Pipeline outputs equal replay's for the same input: yes"),
        "{stdout}"
    );
}
