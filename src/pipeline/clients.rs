//! librdkafka client settings, in one place so that every client agrees on them.
use rdkafka::config::ClientConfig;

use super::config::{Compression, KafkaArgs};

fn base(kafka: &KafkaArgs) -> ClientConfig {
    debug_assert!(
        kafka.is_resolved(),
        "KafkaArgs::resolve must turn the security flags into properties before a client is made"
    );
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    config
}

/// The settings exactly-once depends on; `--kafka-property` may not change them.
const PROTECTED: &[&str] = &[
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "transactional.id",
    "enable.idempotence",
    "acks",
    "partitioner",
];

/// Applies the operator's `--kafka-property` settings over our defaults (so e.g. timeouts and
/// security can be tuned), except those exactly-once depends on.
fn with_overrides(mut config: ClientConfig, kafka: &KafkaArgs) -> ClientConfig {
    for (key, value) in &kafka.properties {
        if PROTECTED.contains(&key.as_str()) {
            tracing::warn!(
                key,
                "ignoring --kafka-property: exactly-once depends on this setting"
            );
            continue;
        }
        config.set(key, value);
    }
    config
}

/// The activity consumer: a group member whose offsets commit only inside transactions.
pub fn activity_consumer(kafka: &KafkaArgs, group_id: &str) -> ClientConfig {
    let mut config = base(kafka);
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "300000")
        // librdkafka pauses fetching for this long once its queue is full (default 1 s): a stall
        // of a whole second whenever processing catches up with a full queue.
        .set("fetch.queue.backoff.ms", "10")
        // Statistics feed the per-partition lag metric.
        .set("statistics.interval.ms", "5000");
    with_overrides(config, kafka)
}

/// A reader of whole topics (tables, changelogs): no group, no commits, committed data only.
pub fn table_reader(kafka: &KafkaArgs) -> ClientConfig {
    with_overrides(table_reader_defaults(kafka), kafka)
}

fn table_reader_defaults(kafka: &KafkaArgs) -> ClientConfig {
    let mut config = base(kafka);
    config
        .set("group.id", "autoclaim-table-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // Restore reads as fast as it can apply: do not pause a second each time the queue fills.
        .set("fetch.queue.backoff.ms", "10")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    config
}

/// A reader of a topic up to its end (state restore): as `table_reader`, but a caught-up or empty
/// partition answers a fetch after 10 ms rather than the default 500, since that answer is how the
/// reader learns it has reached the end.
pub fn restore_reader(kafka: &KafkaArgs) -> ClientConfig {
    let mut config = table_reader_defaults(kafka);
    config.set("fetch.wait.max.ms", "10");
    with_overrides(config, kafka)
}

/// The transactional producer of assignments, failures and dead letters.
pub fn transactional_producer(
    kafka: &KafkaArgs,
    transactional_id: &str,
    compression: Compression,
) -> ClientConfig {
    let mut config = base(kafka);
    config
        .set("transactional.id", transactional_id)
        .set("compression.type", compression.property())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // As Kafka Streams does: a crashed instance's open transaction blocks read_committed
        // readers of its partitions until this runs out, so keep it short (commits come every
        // --batch-max-time anyway).
        .set("transaction.timeout.ms", "10000")
        // Right after a commit the coordinator may still be writing its markers and answer the next
        // transaction's first request with CONCURRENT_TRANSACTIONS; librdkafka retries after this
        // (default 100 ms, a stall in every such commit cycle).
        .set("retry.backoff.ms", "10")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random");
    with_overrides(config, kafka)
}

/// A plain idempotent producer (admin API writes, load generation, tests).
pub fn idempotent_producer(kafka: &KafkaArgs) -> ClientConfig {
    let mut config = base(kafka);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random");
    with_overrides(config, kafka)
}

pub fn admin(kafka: &KafkaArgs) -> ClientConfig {
    with_overrides(base(kafka), kafka)
}

/// A client context that logs librdkafka's errors through `tracing`, except the end-of-partition
/// events that table readers ask for on purpose, and leaves statistics to whoever asked for them.
pub struct QuietContext;

impl rdkafka::ClientContext for QuietContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        log_client_error(error, reason);
    }

    fn stats(&self, _: rdkafka::Statistics) {}
}

impl rdkafka::consumer::ConsumerContext for QuietContext {}

pub fn log_client_error(error: rdkafka::error::KafkaError, reason: &str) {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    match error {
        KafkaError::PartitionEOF(_) => {}
        KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
        // Brokers going away and coming back is routine; librdkafka reconnects by itself.
        KafkaError::Global(
            RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
        ) => tracing::warn!(%error, reason, "Kafka connection problem"),
        _ => tracing::error!(%error, reason, "Kafka client error"),
    }
}

#[cfg(test)]
mod tests {
    /// The protocols and codecs the flags and docs offer are compiled in (rdkafka-sys features).
    #[test]
    fn librdkafka_is_built_with_every_protocol_and_codec_offered() {
        let native = rdkafka::ClientConfig::new()
            .create_native_config()
            .expect("a native config");
        let features = native.get("builtin.features").expect("builtin.features");
        for feature in [
            "ssl",
            "sasl_plain",
            "sasl_scram",
            "sasl_oauthbearer",
            "oidc",
            "gzip",
            "snappy",
            "lz4",
            "zstd",
        ] {
            assert!(
                features.split(',').any(|f| f == feature),
                "librdkafka lacks {feature}: {features}"
            );
        }
    }
}
