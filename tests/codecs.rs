//! Every compression codec a producer may use is read, and the processor's own output codec is the
//! one configured. The inputs are compressed by kcat (librdkafka as Debian ships it), and the codec
//! of each batch is read from the broker's log segments, so the test knows what was on the wire.
//! Needs AUTOCLAIM_TEST_BROKERS and AUTOCLAIM_KAFKA_RUN (scripts/test sets both).
mod kafka_support;

use std::time::Duration;

use autoclaim::scenario::{Scenario, ScenarioConfig};
use autoclaim::wire::Format;
use kafka_support::segment::topic_batches;
use kafka_support::*;

const DELAY: Duration = Duration::from_secs(3600);
const WAIT: Duration = Duration::from_secs(120);
const PARTITIONS: i32 = 3;
const CODECS: [(&str, u16); 4] = [("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)];
const ZSTD: u16 = 4;

#[test]
fn activity_in_every_codec_is_decided_once_and_outputs_use_the_configured_codec() {
    let topics = unique_topics("codecs");
    create_topics(&topics, PARTITIONS);
    let scenario = Scenario::new(ScenarioConfig {
        tenants: 10,
        users_per_tenant: 30,
        seed: 21,
        ..ScenarioConfig::default()
    });
    let tables = scenario.tables();
    let activity = activity_records(scenario.activity(2000));
    let all: Vec<_> = tables.iter().chain(&activity).cloned().collect();
    let expected = expected(&all, DELAY);
    assert!(!expected.assignments.is_empty(), "the scenario assigns");
    publish(&topics, &tables, Format::Json);
    // A quarter of the stream in each codec, partitioned as Kafka's Java client does.
    for (chunk, (codec, _)) in activity.chunks(activity.len() / 4).zip(CODECS) {
        kcat_produce(
            &topics.activity,
            &kcat_lines(chunk),
            &["-z", codec, "-X", "topic.partitioner=murmur2_random"],
        );
    }
    let on_the_wire: Vec<u16> = topic_batches(&topics.activity, PARTITIONS)
        .iter()
        .map(|b| b.codec)
        .collect();
    for (codec, id) in CODECS {
        assert!(
            on_the_wire.contains(&id),
            "kcat wrote no {codec} batch: {on_the_wire:?}"
        );
    }

    let group = format!("g-{}", topics.activity);
    let mut service = Service::start(&ServiceOptions {
        topics: &topics,
        group: &group,
        transactional_id: "codecs-1",
        delay: "1h",
        extra: vec!["--output-compression".into(), "zstd".into()],
    });
    wait_processed_by(&mut service, &topics, &group, WAIT);
    assert_equal_to_replay(&topics, &expected);
    assert!(service.stop().success(), "log: {}", service.log_text());
    assert!(
        !service.log_text().contains("Decompression"),
        "no batch failed to decompress: {}",
        service.log_text()
    );

    let outputs = topic_batches(&topics.assignments, PARTITIONS);
    let data: Vec<u16> = outputs
        .iter()
        .filter(|b| !b.control)
        .map(|b| b.codec)
        .collect();
    assert!(!data.is_empty(), "assignments were written");
    assert!(
        data.iter().all(|c| *c == ZSTD),
        "every assignment batch is zstd: {data:?}"
    );
}
