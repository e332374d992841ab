//! A partition that cannot be read stops the service loudly rather than standing still unseen. A
//! gzip batch is made undecompressable in the broker's own log segment (its CRC made right, so the
//! broker serves it): the records before it are decided, and then the service says which partition
//! and offset stand still, counts the errors, turns /readyz red and, after --stall-timeout, exits
//! non-zero naming them. Needs AUTOCLAIM_TEST_BROKERS and AUTOCLAIM_KAFKA_RUN (scripts/test).
mod kafka_support;

use std::time::Duration;

use autoclaim::scenario::{Scenario, ScenarioConfig};
use autoclaim::wire::Format;
use kafka_support::segment::{batches, corrupt, segments};
use kafka_support::*;

const DELAY: Duration = Duration::from_secs(3600);
const GZIP: u16 = 1;

#[test]
fn an_unreadable_batch_is_reported_turns_readiness_red_and_stops_the_service() {
    let topics = unique_topics("stall");
    create_topics(&topics, 1);
    let scenario = Scenario::new(ScenarioConfig {
        tenants: 5,
        users_per_tenant: 20,
        seed: 5,
        ..ScenarioConfig::default()
    });
    let tables = scenario.tables();
    let activity = activity_records(scenario.activity(600));
    let (before, rest) = activity.split_at(200);
    let (unreadable, after) = rest.split_at(200);
    publish(&topics, &tables, Format::Json);
    publish(&topics, before, Format::Json);
    kcat_produce(&topics.activity, &kcat_lines(unreadable), &["-z", "gzip"]);
    publish(&topics, after, Format::Json);

    let segment = segments(&topics.activity, 0).remove(0);
    let batch = batches(&segment)
        .into_iter()
        .find(|b| b.codec == GZIP)
        .expect("kcat wrote a gzip batch");
    assert_eq!(batch.base_offset, before.len() as i64);
    corrupt(&segment, &batch);

    let group = format!("g-{}", topics.activity);
    let mut service = Service::start(&ServiceOptions {
        topics: &topics,
        group: &group,
        transactional_id: "stall-1",
        delay: "1h",
        extra: vec!["--stall-timeout".into(), "40s".into()],
    });
    let addr = service.http_addr();
    let stalled_series = format!(
        "autoclaim_partition_stalled{{topic=\"{}\",partition=\"0\"}} 1",
        topics.activity
    );
    wait_until("the stall to be reported", Duration::from_secs(60), || {
        assert!(service.is_running(), "exited early: {}", service.log_text());
        http_get(addr, "/metrics").1.contains(&stalled_series)
    });
    let (status, body) = http_get(addr, "/readyz");
    assert_eq!(status, 503, "not ready while stalled: {body}");
    assert!(body.contains("stalled"), "{body}");
    let metrics = http_get(addr, "/metrics").1;
    assert!(
        metrics.contains("autoclaim_consumer_errors_total{error=\"BadCompression\"}"),
        "decompression errors are counted: {metrics}"
    );
    let offset = format!("offset={}", batch.base_offset);
    let log = service.log_text();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("partition stalled")
            && l.contains(&topics.activity)
            && l.contains("partition=0")
            && l.contains(&offset)),
        "an ERROR line names topic, partition and offset: {log}"
    );

    let status = service.wait(Duration::from_secs(120));
    assert!(!status.success(), "a stalled service exits non-zero");
    let log = service.log_text();
    let reason = format!(
        "partition 0 of {} has not moved from offset {}",
        topics.activity, batch.base_offset
    );
    assert!(log.contains(&reason), "the exit names the partition: {log}");

    // What came before the unreadable batch was decided, exactly once; nothing was skipped past it.
    let decided: Vec<_> = tables.iter().chain(before).cloned().collect();
    assert_equal_to_replay(&topics, &expected(&decided, DELAY));
    assert_eq!(
        stable_committed_sum(&topics, &group, &[0]),
        batch.base_offset,
        "the committed offset stops at the unreadable batch"
    );
}
