//! Long commands show their progress on stderr when it is a terminal, and only then. A terminal is
//! given by `script` (util-linux), which runs the command on a pseudo-terminal. Needs
//! AUTOCLAIM_TEST_BROKERS (see `scripts/kafka`).
mod kafka_support;

use std::process::Command;

use autoclaim::scenario::{Scenario, ScenarioConfig};
use kafka_support::*;

const RECORDS: usize = 3_000;

fn replay_file(name: &str) -> std::path::PathBuf {
    let scenario = Scenario::new(ScenarioConfig::default());
    let lines: String = activity_records(scenario.activity(RECORDS))
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    let path = std::env::temp_dir().join(format!("{name}-{}.jsonl", std::process::id()));
    std::fs::write(&path, lines).unwrap();
    path
}

fn publish_args(
    topics: &autoclaim::pipeline::config::Topics,
    input: &std::path::Path,
) -> Vec<String> {
    let mut args = vec![
        "publish".to_owned(),
        "--brokers".to_owned(),
        brokers(),
        "--input".to_owned(),
        input.display().to_string(),
    ];
    args.extend(topics.command_line_args());
    args
}

/// A shell word, quoted for `script -c`.
fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[test]
fn publish_counts_on_a_terminal_and_prints_only_its_total_in_a_pipe() {
    let topics = unique_topics("progress");
    create_topics(&topics, 2);
    let input = replay_file("progress");
    let binary = env!("CARGO_BIN_EXE_autoclaim");
    let args = publish_args(&topics, &input);

    let command_line = std::iter::once(binary.to_owned())
        .chain(args.iter().cloned())
        .map(|w| quoted(&w))
        .collect::<Vec<_>>()
        .join(" ");
    let on_terminal = Command::new("script")
        .args(["-qec", &command_line, "/dev/null"])
        .output()
        .expect("run script (util-linux)");
    let seen = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(on_terminal.status.success(), "{seen}");
    assert!(
        seen.contains("\r\x1b[2Kpublished: "),
        "no progress line: {seen:?}"
    );
    assert!(seen.contains(&format!("published: {RECORDS}")), "{seen:?}");
    assert!(
        seen.contains(&format!("published {RECORDS} records")),
        "{seen:?}"
    );

    let in_a_pipe = Command::new(binary).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&in_a_pipe.stderr);
    assert!(in_a_pipe.status.success(), "{stderr}");
    assert!(
        !stderr.contains('\r') && !stderr.contains("published: "),
        "{stderr:?}"
    );
    assert!(
        stderr.contains(&format!("published {RECORDS} records")),
        "{stderr:?}"
    );
    let _ = std::fs::remove_file(input);
}
